"""Store backends, chosen by URL scheme and imported lazily (asyncpg only when PostgreSQL is used)."""

from __future__ import annotations

import importlib

from registry.stores.base import HandleStore

__all__ = ["SUPPORTED_BACKENDS", "open_store"]

SUPPORTED_BACKENDS = {
    "sqlite": "registry.stores.sqlite:SQLiteStore",
    "postgresql": "registry.stores.postgres:PostgresStore",
    "postgres": "registry.stores.postgres:PostgresStore",
}


def store_class(url: str) -> type:
    scheme = url.split(":", 1)[0].lower() if "://" in url else "sqlite"
    try:
        target = SUPPORTED_BACKENDS[scheme]
    except KeyError:
        known = ", ".join(sorted(SUPPORTED_BACKENDS))
        raise ValueError(f"unsupported store URL scheme {scheme!r} (known: {known})") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


async def open_store(url: str, **options: object) -> HandleStore:
    """Create the backend for ``url``, run its migrations and return it open."""
    store = store_class(url)(url, **options)
    await store.open()
    return store
