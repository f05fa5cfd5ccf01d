"""Every process that writes to a store tells the caches of the nodes that serve it.

A node started with ``redis`` records in the store (``meta`` key ``shared_cache``) the Redis cache
it shares with the other nodes: the URL without its password, and the key prefix. A writer started
without ``redis`` (``idnode import`` and the other admin commands, a node started without
``--redis``) uses that cache, so the nodes never keep serving a record it replaced for up to
``cache_redis_max_ttl``. A password is never copied into the store: when the recorded Redis needs
one, such a writer refuses with a message naming the setting to pass.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import socket
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from registry.stores.base import HandleStore
from resolver.cache.decoded import DecodedRecords
from resolver.cache.tiered import TieredCache, build_cache
from resolver.config import Config, ConfigError

__all__ = [
    "FORGET_HINT",
    "SHARED_CACHE_META",
    "SharedCache",
    "SharedCacheError",
    "forget_shared_cache",
    "node_cache",
    "record_shared_cache",
    "recorded",
    "without_password",
    "writer_cache",
]

log = logging.getLogger("idnode.cache")
SHARED_CACHE_META = "shared_cache"
FORGET_HINT = "if no node uses that Redis any more, run `idnode cache forget`"


class SharedCacheError(Exception):
    """A writer cannot reach or use the cache the store's nodes share."""


@dataclasses.dataclass(frozen=True)
class SharedCache:
    redis: str  # without a password
    key_prefix: str
    needs_password: bool
    recorded_by: str = ""
    recorded_at: str = ""

    def describe(self) -> str:
        return f"{self.redis} (key prefix {self.key_prefix!r})"


def without_password(url: str) -> tuple[str, bool]:
    """``url`` with any password removed (from the user part and a ``password=`` query
    parameter), and whether there was one."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k.lower() != "password"]
    had = bool(colon and password) or len(kept) < len(query)
    if not had:
        return url, False
    netloc = f"{user}@{hostport}" if at and user else hostport
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(kept), parts.fragment)), had


async def recorded(store: HandleStore) -> SharedCache | None:
    """The cache recorded by the nodes, or None (none recorded, or forgotten)."""
    raw = await store.get_meta(SHARED_CACHE_META)
    if not raw:
        return None
    data = json.loads(raw)
    if not data.get("redis"):
        return None
    return SharedCache(
        redis=data["redis"],
        key_prefix=data.get("redis_key_prefix", "idnode:"),
        needs_password=bool(data.get("password")),
        recorded_by=data.get("recorded_by", ""),
        recorded_at=data.get("recorded_at", ""),
    )


async def record_shared_cache(store: HandleStore, config: Config) -> None:
    """Called by a node started with ``redis``: the cache every writer of this store must tell."""
    url, has_password = without_password(config.redis)
    before = await recorded(store)
    if before is not None and before.key_prefix != config.redis_key_prefix:
        log.warning(
            "the store recorded the shared cache %s; this node uses key prefix %r: nodes sharing a store "
            "must share one cache and one key prefix",
            before.describe(),
            config.redis_key_prefix,
        )
    value = {
        "redis": url,
        "redis_key_prefix": config.redis_key_prefix,
        "password": has_password,
        "recorded_by": f"idnode serve on {socket.gethostname()}:{config.port}",
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if before is None or (before.redis, before.key_prefix, before.needs_password) != (
        url,
        config.redis_key_prefix,
        has_password,
    ):
        await store.set_meta(SHARED_CACHE_META, json.dumps(value))


async def forget_shared_cache(store: HandleStore) -> SharedCache | None:
    """Drop the record (the nodes no longer share that Redis); the one dropped, if any."""
    before = await recorded(store)
    await store.set_meta(SHARED_CACHE_META, "")
    return before


async def writer_cache(config: Config, store: HandleStore) -> tuple[Config, SharedCache | None]:
    """The settings a writer uses for its cache: its own ``redis`` if set, else the cache recorded
    in the store (returned second, None when the writer's own settings are used)."""
    if config.redis:
        return config, None
    shared = await recorded(store)
    if shared is None:
        return config, None
    if shared.needs_password:
        raise SharedCacheError(
            f"the nodes of this store share the Redis cache {shared.describe()}, which needs a password that "
            "is not kept in the store: set redis (IDNODE_REDIS, or --redis for serve) to its full URL so that "
            f"what this process writes reaches their caches; {FORGET_HINT}"
        )
    return dataclasses.replace(config, redis=shared.redis, redis_key_prefix=shared.key_prefix), shared


async def node_cache(
    config: Config, store: HandleStore, *, records: DecodedRecords | None = None
) -> TieredCache | None:
    """The node's cache tiers (sharing ``records`` with the Resolver). With ``redis`` the node
    records its shared cache in the store; without, it uses the one recorded there (if any), so that
    its writes reach the other nodes."""
    if config.redis:
        await record_shared_cache(store, config)
        return await build_cache(config, store, records=records)
    try:
        settings, shared = await writer_cache(config, store)
    except SharedCacheError as exc:
        raise ConfigError(str(exc)) from None
    cache = await build_cache(settings, store, records=records)
    if shared is not None and cache is not None:
        log.info("no redis setting: using the shared cache %s that the store's nodes recorded", shared.describe())
        if cache.bus is not None and not cache.bus.subscribed:
            log.error(
                "cannot reach the shared Redis cache %s recorded in the store: resolving from the store, and "
                "writes made here reach the other nodes' caches only once it answers; set redis to the address "
                "it has from here; %s",
                shared.describe(),
                FORGET_HINT,
            )
    return cache
