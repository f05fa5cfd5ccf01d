"""Typed application keys (aiohttp ``AppKey``) and the per-process node state they point at.

The app freezes before startup, so what startup builds (store, registry, resolver, native handler)
goes into one mutable :class:`NodeState` set at creation time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from resolver.http.ready_replies import ReadyReplies
from resolver.http.sessions import SessionStore
from resolver.ops.resolutions import ResolutionCounter, ResolutionFlusher

if TYPE_CHECKING:
    from registry.job_runner import JobRunner
    from registry.service import Registry
    from registry.value_index import ValueIndexer
    from resolver.config import Config
    from resolver.http.throttle import GuessThrottle
    from resolver.native.handler import NativeHandler
    from resolver.resolve import Resolver


@dataclass
class NodeState:
    registry: Registry | None = None
    resolver: Resolver | None = None
    native: NativeHandler | None = None  # the native protocol's handler; resolver.server binds its listeners
    sessions: SessionStore = field(default_factory=SessionStore)
    throttle: GuessThrottle | None = None  # set at startup (it may talk to Redis)
    idempotency_locks: dict[str, tuple[asyncio.Lock, list[int]]] = field(default_factory=dict)  # in-flight keys
    # Resolutions per prefix and interface: count(name.prefix, "rest" | "native" | "web", found).
    resolutions: ResolutionCounter = field(default_factory=ResolutionCounter)
    resolution_flusher: ResolutionFlusher | None = None  # set at startup (it writes to the store)
    jobs: JobRunner | None = None  # the background jobs of this process (set at startup)
    indexer: ValueIndexer | None = None  # keeps the reverse-lookup index up to date (set at startup)
    # Anonymous resolve replies rendered once per record (resolver.http.hot_path serves them).
    replies: ReadyReplies = field(default_factory=ReadyReplies)


CONFIG_KEY: web.AppKey[Config] = web.AppKey("config")
STATE_KEY: web.AppKey[NodeState] = web.AppKey("state", NodeState)


def registry_of(request: web.Request) -> Registry:
    registry = request.app[STATE_KEY].registry
    assert registry is not None, "node not started"
    return registry


def resolver_of(request: web.Request) -> Resolver:
    resolver = request.app[STATE_KEY].resolver
    assert resolver is not None, "node not started"
    return resolver
