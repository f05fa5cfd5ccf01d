"""Settings: one frozen dataclass built from defaults < config file < environment < flags.

Each field carries its help text; the CLI builds its ``serve`` options from these fields and a test
checks that each one is documented in the README.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Config", "ConfigError", "load_config"]

ENV_PREFIX = "IDNODE_"


class ConfigError(ValueError):
    pass


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Config:
    host: str = _f("127.0.0.1", "Address the HTTP API listens on.")
    port: int = _f(8000, "HTTP port.")
    advertise_host: str = _f(
        "", "Address published in the node's HS_SITE (default: host, or 127.0.0.1 when host is a wildcard)."
    )
    prefix: str = _f("88.118.8", "The node prefix this node is authoritative for.")
    public_base_url: str = _f(
        "",
        "The node's public URL as phones and browsers reach it (http(s)://host[:port][/path], no query), which QR "
        "codes and labels encode as <public_base_url>/<prefix>/<suffix> (default: from host, or advertise_host, and "
        "port).",
    )
    label_font: str = _f(
        "",
        "TrueType/OpenType font for label text outside Latin-1, e.g. Chinese suffixes (.ttf, .otf, or .ttc with #N "
        "for a face); empty: the one fontconfig picks for Chinese (Debian's fonts-noto-cjk).",
    )
    data_dir: str = _f("./data", "Directory of the embedded SQLite store (kept private to the node's user, 0700).")
    store: str = _f("", "Store URL: sqlite:///path.db or postgresql://user@host/db (default: SQLite in data_dir).")
    redis: str = _f("", "Redis URL for the shared cache tier (redis://…, rediss://…, redis+cluster://…); empty: none.")
    redis_key_prefix: str = _f(
        "idnode:", "Prefix of every Redis key and channel the node uses (processes sharing a cache need the same one)."
    )
    redis_timeout_ms: int = _f(250, "Timeout of each Redis call (connect and reply), in milliseconds.")
    redis_breaker_failures: int = _f(
        5, "Consecutive Redis failures that open the circuit breaker (one timeout opens it at once)."
    )
    redis_breaker_cooldown_ms: int = _f(
        2000, "How long the open breaker sends lookups straight to the store before probing Redis, in milliseconds."
    )
    cache_local_entries: int = _f(100_000, "Most entries in each process's local cache tier; 0 turns the tier off.")
    cache_local_bytes: int = _f(67_108_864, "Most bytes held by each process's local cache tier.")
    cache_max_staleness: int = _f(
        60, "Longest a local-tier entry is served, in seconds (the handle values' TTL may make it shorter)."
    )
    cache_negative_ttl: int = _f(5, "How long 'handle not found' is cached, in seconds; 0: not at all.")
    cache_redis_max_ttl: int = _f(
        3600, "Longest a Redis-tier entry lives, in seconds (the handle values' TTL may make it shorter)."
    )
    cache_invalidation_wait_ms: int = _f(
        1000, "How long a write waits for every process to confirm it dropped the old record, in milliseconds."
    )
    workers: int = _f(1, "Worker processes sharing the port (SO_REUSEPORT).")
    tls_cert: str = _f("", "PEM certificate for HTTPS.")
    tls_key: str = _f("", "PEM private key for HTTPS.")
    insecure_auth: bool = _f(
        False, "Accept credentials over plain HTTP on a non-loopback address (behind a TLS-terminating proxy)."
    )
    max_body_bytes: int = _f(1_048_576, "Largest request body for single-handle writes and admin calls, in bytes.")
    batch_max_items: int = _f(100_000, "Most items in one batch registration (POST /api/handles).")
    batch_max_bytes: int = _f(268_435_456, "Largest batch body, in bytes (the body is streamed, not held).")
    max_handle_length: int = _f(255, "Longest handle accepted, in characters.")
    case_sensitive_suffix: bool = _f(True, "Compare handle suffixes case-sensitively (prefixes never are).")
    max_values: int = _f(1000, "Most values one handle may hold.")
    max_value_bytes: int = _f(65_536, "Largest data of one handle value, in bytes.")
    max_page_size: int = _f(10_000, "Largest pageSize for listing handles (also the size when none is given).")
    access_log: bool = _f(False, "Write an access log line for every request (off: the resolve path stays lean).")
    log_level: str = _f("info", "Log level: debug, info, warning, error.")
    policy_file: str = _f("", "Clause-8 policy (TOML or JSON) for tallies; empty: the Baiyun draft defaults.")
    report_key_file: str = _f(
        "",
        "PEM file of the Ed25519 key that signs reports, kept out of the store (created 0600 if absent, "
        "from the store's key if it has one); empty: the key is kept in the store.",
    )
    native_port: int = _f(2641, "UDP/TCP port of the native Handle protocol; 0 disables it.")
    native_tcp_max_connections: int = _f(
        1024, "Most native TCP connections held at once; at the cap the one idle longest is closed for a new one."
    )
    native_tcp_max_per_address: int = _f(
        64, "Most native TCP connections from one client address (an IPv6 /64); past it its longest idle is closed."
    )
    native_tcp_idle_timeout: int = _f(
        30, "Seconds a native TCP connection may go without a complete request before it is closed."
    )
    native_udp_max_reply: int = _f(
        4096, "Largest reply message sent over UDP, in bytes; a larger one is answered truncated (retry over TCP)."
    )
    native_udp_budget: int = _f(
        65_536,
        "Reply bytes per second the UDP listener sends to one address before it only answers truncated; 0: none.",
    )
    http_header_timeout: int = _f(10, "Seconds a client has to send a request's line and headers.")
    http_body_timeout: int = _f(30, "Seconds a request body may go without a byte arriving while it is read.")
    http_keepalive_timeout: int = _f(75, "Seconds an idle keep-alive HTTP connection is held open.")
    auth_scrypt_threads: int = _f(
        max(1, (os.cpu_count() or 2) // 2),
        "Threads per worker that hash and check secret keys (scrypt), off the event loop (default: half the CPUs).",
    )
    auth_scrypt_queue: int = _f(
        16,
        "Most secret-key checks queued or running per worker; beyond it a credential check is answered 503 "
        "(responseCode 3) with Retry-After, as is a fifth concurrent check from one client address.",
    )
    auth_cache_ttl: int = _f(
        300, "How long a successful secret-key check is remembered, in seconds (0: check every request)."
    )
    auth_throttle_failures: int = _f(
        10,
        "Wrong credentials for one identity from one client address within auth_throttle_window before the node "
        "answers 429 with Retry-After; each further level allows twice as many in four times the window.",
    )
    auth_throttle_window: int = _f(300, "The first throttle level's window, in seconds.")
    auth_throttle_levels: int = _f(
        5, "Throttle levels (back-off steps); with the defaults the last one locks a persistent guesser for ~21 h."
    )
    trusted_proxies: str = _f(
        "",
        "Comma-separated addresses or networks of reverse proxies (nginx, an Ingress) whose X-Forwarded-For names "
        "the client; the credential throttle and session bounds count that client, not the proxy.",
    )
    sessions_per_address: int = _f(
        100,
        "Most unauthenticated challenge-response sessions one client address holds (its oldest go first; "
        "authenticated sessions are never evicted for them).",
    )
    stats_flush_seconds: int = _f(
        5, "Seconds between flushes of each worker's resolution counts to the store (and at shutdown)."
    )
    stats_metric_prefixes: int = _f(
        100, "Prefixes per worker with their own label in idnode_resolutions_total; the rest count as 'other'."
    )
    job_max_bytes: int = _f(
        209_715_200,
        "Largest file a job takes (POST /api/jobs), in bytes, after any gzip; a larger one is answered 413.",
    )
    job_workers: int = _f(
        2, "Jobs each worker process runs at once, in the background; 0: none here (other processes of the store do)."
    )
    job_lease_seconds: int = _f(
        30,
        "How long a running job stays claimed without its runner renewing the claim: after a crash the job resumes "
        "from its checkpoint (on any process of the store, or the restarted node) once this has passed.",
    )
    job_chunk_rows: int = _f(
        1000,
        "Most rows a job writes in one transaction; its checkpoint is saved after each (and at least every second).",
    )
    console_idle_timeout: int = _f(
        1800, "Seconds a web console session may go unused before it ends (the next page asks to sign in again)."
    )
    console_session_lifetime: int = _f(
        43_200, "Seconds a web console session lasts at most from sign-in, however busy (default: 12 hours)."
    )

    @property
    def store_url(self) -> str:
        if self.store:
            return self.store
        return "sqlite:///" + str(Path(self.data_dir) / "idnode.db")

    def node_settings(self):  # type: ignore[no-untyped-def]
        """The registry's settings (limits, prefix, case rules) from these settings."""
        from registry.jsonvalues import ValueLimits
        from registry.service import NodeSettings

        return NodeSettings(
            prefix=self.prefix,
            max_handle_length=self.max_handle_length,
            case_sensitive_suffix=self.case_sensitive_suffix,
            value_limits=ValueLimits(max_values=self.max_values, max_data_bytes=self.max_value_bytes),
            scrypt_threads=self.auth_scrypt_threads,
            scrypt_max_jobs=self.auth_scrypt_queue,
            auth_cache_ttl=float(self.auth_cache_ttl),
        )

    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_proxies`` parsed (ValueError for a malformed entry)."""
        return _networks(self.trusted_proxies)

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

    def help(self, name: str) -> str:
        return {f.name: f.metadata["help"] for f in dataclasses.fields(self)}[name]


@functools.lru_cache(maxsize=8)
def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    kind = {"int": int, "bool": bool, "str": str}.get(kind, kind) if isinstance(kind, str) else kind
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name}: expected true/false, got {raw!r}")
    if kind is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    return str(raw)


def load_config(
    file: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Build a Config: defaults, then a TOML file, then ``IDNODE_*`` variables, then ``overrides``."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    if file:
        try:
            data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {file}: {exc}") from None
        data = data.get("idnode", data)
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"unknown setting {key!r} in {file}")
            values[name] = _coerce(name, fields[name].type, raw)
    env = os.environ if env is None else env
    for name, f in fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce(name, f.type, raw)
    for name, raw in (overrides or {}).items():
        if raw is not None:
            values[name] = _coerce(name, fields[name].type, raw)
    config = Config(**values)
    _validate(config)
    return config


def _validate(c: Config) -> None:
    positive = (
        "port",
        "max_body_bytes",
        "max_handle_length",
        "max_values",
        "max_value_bytes",
        "max_page_size",
        "batch_max_items",
        "batch_max_bytes",
        "auth_scrypt_threads",
        "auth_scrypt_queue",
        "auth_throttle_failures",
        "auth_throttle_window",
        "auth_throttle_levels",
        "sessions_per_address",
        "stats_flush_seconds",
        "console_idle_timeout",
        "console_session_lifetime",
    )
    for name in positive:
        if getattr(c, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    if not 0 <= c.native_port <= 65535 or not 0 < c.port <= 65535:
        raise ConfigError("ports must be between 1 and 65535 (native_port 0 disables it)")
    if c.workers < 1:
        raise ConfigError("workers must be at least 1")
    not_negative = (
        "cache_local_entries",
        "cache_local_bytes",
        "cache_max_staleness",
        "cache_negative_ttl",
        "cache_redis_max_ttl",
        "cache_invalidation_wait_ms",
        "auth_cache_ttl",
        "stats_metric_prefixes",
    )
    for name in not_negative:
        if getattr(c, name) < 0:
            raise ConfigError(f"{name} must not be negative")
    for name in ("redis_timeout_ms", "redis_breaker_failures", "redis_breaker_cooldown_ms"):
        if getattr(c, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    limits = (
        "native_tcp_max_connections",
        "native_tcp_max_per_address",
        "native_tcp_idle_timeout",
        "http_header_timeout",
        "http_body_timeout",
        "http_keepalive_timeout",
    )
    for name in limits:
        if getattr(c, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    if not 0 <= c.job_workers <= 64:
        raise ConfigError("job_workers must be between 0 and 64")
    if c.job_max_bytes <= 0:
        raise ConfigError("job_max_bytes must be positive")
    if not 3 <= c.job_lease_seconds <= 3600:
        raise ConfigError("job_lease_seconds must be between 3 and 3600")
    if not 1 <= c.job_chunk_rows <= 100_000:
        raise ConfigError("job_chunk_rows must be between 1 and 100000")
    if c.stats_flush_seconds > 3600:
        raise ConfigError("stats_flush_seconds must be at most 3600 (counts wait in memory until flushed)")
    if not 492 <= c.native_udp_max_reply <= 262_144:
        raise ConfigError("native_udp_max_reply must be between 492 (one datagram) and 262144 bytes")
    if c.native_udp_budget < 0:
        raise ConfigError("native_udp_budget must not be negative")
    if c.advertise_host:
        try:
            ipaddress.ip_address(c.advertise_host)
        except ValueError:
            raise ConfigError("advertise_host must be an IP address (HS_SITE holds addresses, not names)") from None
    try:
        c.proxy_networks()
    except ValueError as exc:
        raise ConfigError(f"trusted_proxies: {exc}") from None
    if c.public_base_url:
        problem = public_url_problem(c.public_base_url)
        if problem:
            raise ConfigError(f"public_base_url: {problem}")
    if bool(c.tls_cert) != bool(c.tls_key):
        raise ConfigError("tls_cert and tls_key go together")
    if c.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level must be debug, info, warning or error")


def public_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as the node's public base URL (None: nothing): an absolute http or
    https URL of printable ASCII (a name in its punycode form), without credentials, query or fragment."""
    if not url.isascii() or not url.isprintable() or " " in url:
        return "printable ASCII without spaces (punycode for international names, %-escapes in the path)"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an absolute http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "no user name or password: the URL is printed on labels"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "no query or fragment: handles are appended to its path"
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError:
        return "the port must be a number between 0 and 65535"
    return None
