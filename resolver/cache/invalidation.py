"""Cache invalidation across processes: tombstones in Redis, a pub/sub channel, acknowledgements.

A write (``invalidate(keys)``, called by the Registry listener after the commit):

1. sets a version tombstone on each key (``RedisTier.tombstone``) at the store's
   ``current_version()`` read after the commit, so no reader can refill the old record;
2. PUBLISHes ``[origin, seq, keys]`` on ``<prefix>invalidate``; every idnode process subscribes,
   drops the keys from its local tier and answers on ``<prefix>ack:<origin>``;
3. waits (at most ``ack_wait`` seconds) until as many processes as PUBLISH reached have answered,
   so when the write is acknowledged no process still serves the old record from its local tier.

A process whose subscription is down does not use its local tier at all, and drops it whole when
the subscription is back. Invalidations that could not be sent (Redis away, breaker open) are kept
(bounded) and re-sent by the probe before the breaker closes again; if too many pile up, the probe
deletes this node's whole key space in Redis and tells every process to drop its local tier.

On Redis Cluster, publisher and subscribers all use the node that owns the channel name's slot, so
the count PUBLISH returns covers every subscriber (cluster-wide PUBLISH counts only local ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgpack
from redis.asyncio import Redis

from resolver.cache.redis_tier import RedisTier, RedisUnavailable, node_client

__all__ = ["InvalidationBus"]

log = logging.getLogger("idnode.cache")
PUBLISH_CHUNK = 1000  # keys per invalidation message
PENDING_MAX = 100_000  # invalidations kept while Redis is away; beyond that, purge on recovery
PING_EVERY = 1.0  # seconds between PINGs on an idle subscription
DEAD_AFTER = 3.5  # no reply for this long: the subscription is dead


class _AckWaiter:
    __slots__ = ("done", "expected", "received")

    def __init__(self) -> None:
        self.received = 0
        self.expected: int | None = None
        self.done = asyncio.Event()

    def check(self) -> None:
        if self.expected is not None and self.received >= self.expected:
            self.done.set()


class InvalidationBus:
    def __init__(
        self,
        tier: RedisTier,
        url: str,
        *,
        on_keys: Callable[[Sequence[str] | None], None],
        on_connected: Callable[[], None],
        on_disconnected: Callable[[], None],
        current_version: Callable[[], Awaitable[int]],
        tombstone_ttl: float = 10.0,
        ack_wait: float = 1.0,
        node_id: str | None = None,
    ) -> None:
        self.tier = tier
        self.url = url
        self.on_keys = on_keys
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.current_version = current_version
        self.tombstone_ttl = tombstone_ttl
        self.ack_wait = ack_wait
        self.node_id = node_id or uuid.uuid4().hex[:16]
        self.channel = f"{tier.key_prefix}invalidate"
        self.ack_channel = f"{tier.key_prefix}ack:{self.node_id}"
        self.subscribed = False
        self.reconnects = 0  # subscriptions (re)established
        self.ack_timeouts = 0
        self._seq = itertools.count(1)
        self._waiters: dict[int, _AckWaiter] = {}
        self._pending: dict[str, None] = {}
        self._overflow = False
        self._pub: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._acks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._sub_ready = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, wait: float = 0.0) -> None:
        """Start the subscriber and the probe; wait up to ``wait`` seconds for the subscription."""
        self._tasks = [
            asyncio.create_task(self._subscriber(), name="idnode-cache-subscriber"),
            asyncio.create_task(self._maintain(), name="idnode-cache-probe"),
        ]
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sub_ready.wait(), wait)

    async def close(self) -> None:
        self._closing = True
        for task in [*self._tasks, *self._acks]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._acks, return_exceptions=True)
        if self._pub is not None and self._pub is not self.tier.client:
            with contextlib.suppress(Exception):
                await self._pub.aclose()

    @property
    def pending(self) -> int:
        return len(self._pending) + (1 if self._overflow else 0)

    # -- the write side ------------------------------------------------------------------------
    async def invalidate(self, keys: Sequence[str]) -> None:
        """Tombstone ``keys`` in Redis and tell every process; never raises (keeps them pending).

        Tried even while the breaker is open: the breaker protects lookups, and a write may pay a
        timeout; what it must not do is leave other processes' local tiers holding the old record
        because this process once saw Redis time out."""
        if not keys or self._overflow:  # on overflow the probe purges everything anyway
            return
        try:
            version = await self.current_version()
            await self.tier.tombstone(keys, version, self.tombstone_ttl, guarded=False)
            await self._publish(keys, wait=True, guarded=False)
        except RedisUnavailable as exc:
            log.warning("cache invalidation of %d key(s) deferred: %s", len(keys), exc)
            self._keep(keys)
        except Exception:
            log.exception("cache invalidation of %d key(s) deferred", len(keys))
            self._keep(keys)

    def _keep(self, keys: Sequence[str]) -> None:
        if self._overflow:
            return
        for key in keys:
            self._pending[key] = None
        if len(self._pending) > PENDING_MAX:
            self._pending.clear()
            self._overflow = True

    async def _flush_pending(self, *, guarded: bool) -> None:
        if self._overflow:
            removed = await self.tier.call(self.tier.purge, guarded=guarded)
            log.warning("cache: too many lost invalidations; purged %d Redis entries", removed)
            self.on_keys(None)  # our own local tier may have been filled from the stale entries too
            await self._publish(None, wait=False, guarded=guarded)
            self._overflow = False
            self._pending.clear()
            return
        keys = list(self._pending)
        if not keys:
            return
        version = await self.current_version()
        await self.tier.tombstone(keys, version, self.tombstone_ttl, guarded=guarded)
        self.on_keys(keys)  # our own local tier may have been filled from the stale entries too
        await self._publish(keys, wait=False, guarded=guarded)
        for key in keys:
            self._pending.pop(key, None)

    async def _publisher(self, guarded: bool) -> Redis:
        if self._pub is None:
            client = self.tier.client
            if not self.tier.cluster:
                self._pub = client  # type: ignore[assignment]
            else:
                await self.tier.call(client.initialize, guarded=guarded)  # type: ignore[union-attr]
                node = client.get_node_from_key(self.channel)  # type: ignore[union-attr]
                self._pub = node_client(self.url, node.host, node.port, self.tier.timeout)
        assert self._pub is not None
        return self._pub

    async def _publish(self, keys: Sequence[str] | None, *, wait: bool, guarded: bool = True) -> None:
        """Send the keys (None: "drop everything"); with ``wait``, until every subscriber answered."""
        pub = await self._publisher(guarded)
        chunks: list[list[str] | None] = (
            [None] if keys is None else [list(keys[i : i + PUBLISH_CHUNK]) for i in range(0, len(keys), PUBLISH_CHUNK)]
        )
        waiters: list[tuple[int, _AckWaiter]] = []
        try:
            for chunk in chunks:
                seq = next(self._seq)
                waiter = self._waiters[seq] = _AckWaiter()
                waiters.append((seq, waiter))
                payload = msgpack.packb([self.node_id, seq, chunk], use_bin_type=True)
                try:
                    reached = await self.tier.call(lambda p=payload: pub.publish(self.channel, p), guarded=guarded)
                except RedisUnavailable:
                    if self.tier.cluster:
                        await self._drop_publisher()
                    raise
                waiter.expected = int(reached)
                waiter.check()
            if wait and self.ack_wait > 0:
                try:
                    async with asyncio.timeout(self.ack_wait):
                        for _, waiter in waiters:
                            await waiter.done.wait()
                except TimeoutError:
                    self.ack_timeouts += 1
                    missing = sum((w.expected or 0) - w.received for _, w in waiters if not w.done.is_set())
                    log.warning("cache: %d subscriber(s) did not confirm an invalidation in time", missing)
        finally:
            for seq, _ in waiters:
                self._waiters.pop(seq, None)

    async def _drop_publisher(self) -> None:
        pub, self._pub = self._pub, None
        if pub is not None and pub is not self.tier.client:
            with contextlib.suppress(Exception):
                await pub.aclose()

    def _acked(self, seq: int) -> None:
        waiter = self._waiters.get(seq)
        if waiter is not None:
            waiter.received += 1
            waiter.check()

    def _send_ack(self, origin: str, seq: int) -> None:
        async def send() -> None:  # unguarded: a writer is waiting for it
            pub = await self._publisher(False)
            channel = f"{self.tier.key_prefix}ack:{origin}"
            await self.tier.call(lambda: pub.publish(channel, b"%d" % seq), guarded=False)

        task = asyncio.create_task(send())
        self._acks.add(task)
        task.add_done_callback(self._ack_done)

    def _ack_done(self, task: asyncio.Task[Any]) -> None:
        self._acks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("cache: could not acknowledge an invalidation: %s", task.exception())

    # -- the subscriber ------------------------------------------------------------------------
    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel, data = message.get("type"), message.get("channel"), message.get("data")
        if kind != "message":
            return
        if channel == self.channel.encode():
            try:
                origin, seq, keys = msgpack.unpackb(data, raw=False)
            except Exception:
                log.warning("cache: ignoring a malformed invalidation message")
                return
            if origin == self.node_id:
                self._acked(seq)  # our own listener already dropped the keys
                return
            self.on_keys(keys)
            self._send_ack(origin, seq)
        elif channel == self.ack_channel.encode():
            with contextlib.suppress(ValueError, TypeError):
                self._acked(int(data))

    async def _subscriber(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            pubsub = None
            try:
                client = await self._publisher(False)
                pubsub = client.pubsub()
                async with asyncio.timeout(max(self.tier.timeout, 1.0) * 4):
                    await pubsub.subscribe(self.channel, self.ack_channel)
                    confirmed = 0
                    while confirmed < 2:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and message.get("type") == "subscribe":
                            confirmed += 1
                # Subscribed: from here on no invalidation is missed, so the local tier can start over.
                self.subscribed = True
                self.reconnects += 1
                self.on_connected()
                self._sub_ready.set()
                last_rx = last_ping = loop.time()
                while not self._closing:
                    message = await pubsub.get_message(timeout=PING_EVERY)
                    now = loop.time()
                    if message is not None:
                        last_rx = now
                        self._dispatch(message)
                    elif now - last_rx > DEAD_AFTER:
                        raise ConnectionError("the invalidation subscription stopped answering")
                    if now - last_ping >= PING_EVERY:
                        last_ping = now
                        await pubsub.ping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.subscribed:
                    log.warning("cache: invalidation subscription lost (%s); local tier off until it is back", exc)
                    self.tier.breaker.trip()
                if self.tier.cluster:
                    await self._drop_publisher()
            finally:
                if self.subscribed:
                    self.subscribed = False
                    self._sub_ready.clear()
                    self.on_disconnected()
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(pubsub.aclose(), 1.0)
            if not self._closing:
                await asyncio.sleep(min(self.tier.breaker.cooldown, 1.0))

    # -- the probe -----------------------------------------------------------------------------
    async def _maintain(self) -> None:
        breaker = self.tier.breaker
        interval = max(0.05, min(breaker.cooldown / 2, 0.5))
        while not self._closing:
            await asyncio.sleep(interval)
            try:
                self.tier.report_breaker()
                if breaker.probe_due():
                    breaker.probe_result(await self._probe())
                    self.tier.report_breaker()
                elif breaker.allow() and (self._pending or self._overflow):
                    await self._flush_pending(guarded=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("cache: maintenance step failed: %s", exc)

    async def _probe(self) -> bool:
        """Half-open: PING, then re-send the invalidations kept while Redis was away."""
        try:
            await self.tier.reset_connections()
            await self.tier.ping()
            await self._flush_pending(guarded=False)
        except Exception as exc:
            log.info("cache: Redis still unavailable: %s", exc)
            return False
        log.info("cache: Redis is back; shared tier in use again")
        return True
