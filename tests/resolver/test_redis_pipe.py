"""The Redis tier's pipelined read connection (``resolver.cache.redis_pipe``), against the machine's Redis
and private ``redis-server`` processes (a password, another database, one killed by PID)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from resolver.cache.breaker import CircuitBreaker
from resolver.cache.redis_pipe import PipeOptions, ReadPipe, _command, pipe_options
from resolver.cache.redis_tier import RedisTier, open_redis
from tests.conftest import REDIS_URL
from tests.resolver.test_cache_failures import RedisServer


def test_pipe_options_follow_the_url() -> None:
    plain = pipe_options("redis://127.0.0.1:6380")
    assert plain == PipeOptions(host="127.0.0.1", port=6380)
    auth = pipe_options("redis://reader:s%40cret@cache.example:6379/3")
    assert auth is not None
    assert (auth.host, auth.username, auth.password, auth.db, auth.tls) == (
        "cache.example",
        "reader",
        "s@cret",
        3,
        None,
    )
    unix = pipe_options("unix:///run/redis/redis.sock?db=2")
    assert unix is not None and (unix.path, unix.host, unix.db) == ("/run/redis/redis.sock", None, 2)
    tls = pipe_options("rediss://:pw@cache.example:6380/0?ssl_cert_reqs=none")
    assert tls is not None and tls.tls is not None
    assert tls.tls.verify_mode == ssl.CERT_NONE and not tls.tls.check_hostname
    verified = pipe_options("rediss://cache.example:6380")
    assert verified is not None and verified.tls is not None and verified.tls.verify_mode == ssl.CERT_REQUIRED
    # What the pipe does not speak: the tier reads through redis-py instead.
    assert pipe_options("redis+cluster://127.0.0.1:7000") is None
    assert pipe_options("redis://127.0.0.1:6379?protocol=3") is None
    assert pipe_options("rediss://cache.example?ssl_certfile=/etc/client.pem") is None
    assert pipe_options("memcached://127.0.0.1:11211") is None
    assert pipe_options("rediss://cache.example?ssl_ca_certs=/no/such/ca.pem") is None  # redis-py reports it


async def test_mgets_are_pipelined_on_one_connection_and_answered_in_order(redis: Redis, redis_prefix: str) -> None:
    await redis.mset({f"{redis_prefix}k{n}": f"v{n}".encode() for n in range(200)})
    options = pipe_options(REDIS_URL)
    assert options is not None
    pipe = await ReadPipe.open(options)
    try:
        clients_before = (await redis.info("clients"))["connected_clients"]
        # 100 MGETs sent before any reply is read, each with its own keys (and one missing key).
        key = f"{redis_prefix}k{{}}".format
        calls = [pipe.mget([key(n).encode(), key(n + 100).encode(), key("none").encode()]) for n in range(100)]
        replies = await asyncio.gather(*calls)
        assert replies == [[f"v{n}".encode(), f"v{n + 100}".encode(), None] for n in range(100)]
        assert (await redis.info("clients"))["connected_clients"] == clients_before  # no connection more
        # An error reply fails its own call only; the calls around it are answered.
        before = pipe.mget([f"{redis_prefix}k1".encode()])
        bad = pipe._send(_command(b"NO-SUCH-COMMAND"))
        after = pipe.mget([f"{redis_prefix}k2".encode()])
        assert await before == [b"v1"]
        with pytest.raises(ResponseError, match="unknown command"):
            await bad
        assert await after == [b"v2"]
    finally:
        pipe.close()
    with pytest.raises(RedisConnectionError):
        await pipe.mget([b"x"])


@pytest.fixture
def locked_redis(tmp_path) -> Iterator[RedisServer]:  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path)
    server.start()  # (its readiness check speaks without a password)
    subprocess.run(["redis-cli", "-p", str(server.port), "config", "set", "requirepass", "s3cret"], check=True)
    yield server
    server.kill()


async def test_a_password_and_a_database_from_the_url(locked_redis: RedisServer, redis_prefix: str) -> None:
    url = f"redis://:s3cret@127.0.0.1:{locked_redis.port}/2"
    writer = Redis.from_url(url)
    try:
        await writer.set(f"{redis_prefix}h:88.118.8/x", b"in db 2")
        tier = RedisTier(open_redis(url, 0.5), redis_prefix, breaker=CircuitBreaker(3, 1), timeout=0.5, url=url)
        try:
            assert await tier.get("88.118.8/x") == b"in db 2"
            assert await tier.get("88.118.8/y") is None
        finally:
            await tier.close()
        wrong = pipe_options(f"redis://:wrong@127.0.0.1:{locked_redis.port}/2")
        assert wrong is not None
        with pytest.raises(ResponseError):
            await ReadPipe.open(wrong)
        # A tier whose pipe Redis refuses (AUTH, SELECT) reads through redis-py from then on.
        url_db2 = f"redis://:s3cret@127.0.0.1:{locked_redis.port}/2"
        tier = RedisTier(open_redis(url_db2, 0.5), redis_prefix, breaker=CircuitBreaker(3, 1), timeout=0.5, url=url_db2)
        tier._pipe_options = wrong
        try:
            assert await tier.get("88.118.8/x") == b"in db 2"  # redis-py, with the right password
            assert tier._pipe_options is None and tier._pipe is None
            assert await tier.get("88.118.8/x") == b"in db 2"
        finally:
            await tier.close()
        db0 = pipe_options(f"redis://:s3cret@127.0.0.1:{locked_redis.port}/0")
        assert db0 is not None
        pipe = await ReadPipe.open(db0)
        try:
            assert await pipe.mget([f"{redis_prefix}h:88.118.8/x".encode()]) == [None]  # another database
        finally:
            pipe.close()
    finally:
        await writer.aclose()


async def test_a_killed_server_fails_the_waiting_reads_and_the_tier_reconnects(tmp_path, redis_prefix: str) -> None:
    server = RedisServer(tmp_path)
    server.start()
    url = server.url
    tier = RedisTier(open_redis(url, 0.5), redis_prefix, breaker=CircuitBreaker(100, 0.1), timeout=0.5, url=url)
    writer = Redis.from_url(url)
    try:
        await writer.set(f"{redis_prefix}h:88.118.8/a", b"A")
        assert await tier.get("88.118.8/a") == b"A"
        pipe = tier._pipe
        assert pipe is not None and not pipe.closed
        server.kill()
        with pytest.raises(Exception, match="Redis"):  # RedisUnavailable: the connection is gone
            await tier.get("88.118.8/a")
        assert pipe.closed
        server.start()  # same port, empty
        await writer.set(f"{redis_prefix}h:88.118.8/a", b"A again")
        assert await tier.get("88.118.8/a") == b"A again"
        assert tier._pipe is not pipe  # a new connection
    finally:
        await writer.aclose()
        await tier.close()
        server.kill()
