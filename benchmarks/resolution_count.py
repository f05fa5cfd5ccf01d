"""What counting resolutions costs a resolve, measured in one process, with and without the count.

The end-to-end benchmarks (``resolve_cache``, ``native_resolve``) are too noisy on a shared 2-core
machine to show a fraction of a microsecond, so this one times the code itself, in one process and
one run, alternating rounds with the real :class:`~resolver.ops.resolutions.ResolutionCounter` and
with a counter whose ``count`` does nothing:

- ``count``: ``ResolutionCounter.count`` alone, against a bare ``dict[k] = dict.get(k, 0) + 1``;
- ``REST``: the ``GET /api/handles/{handle}`` route handler of the real app (started through its
  lifecycle: store, registry, local cache tier) on a mocked request, a local-cache hit, the hot path;
- ``native``: ``NativeHandler.respond`` on a plain UDP resolution request (the fast path).

Prints the fastest round's time per call of each (as ``timeit`` advises: other work on the machine only
ever adds time, so the minimum is the least disturbed figure) and the ratio without counting to with.

    .venv/bin/python -m benchmarks.resolution_count [--calls 2000] [--rounds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

ADMIN_SECRET = "benchmark-admin-secret"
NODE = "88.118.8"


class _NoCount:
    """The counter's interface without the counting (the baseline)."""

    def count(self, prefix: str, interface: str, found: bool = True) -> None:
        return None


async def _time(call: Callable[[], Awaitable[Any]] | Callable[[], Any], calls: int, is_async: bool) -> float:
    """Seconds per call over ``calls`` calls."""
    start = time.perf_counter()
    if is_async:
        for _ in range(calls):
            await call()  # type: ignore[misc]
    else:
        for _ in range(calls):
            call()
    return (time.perf_counter() - start) / calls


async def main(calls: int, rounds: int) -> None:
    from aiohttp.test_utils import TestServer, make_mocked_request

    from resolver.config import load_config
    from resolver.http.app import create_app
    from resolver.http.keys import STATE_KEY
    from resolver.http.routes import resolve
    from resolver.native.codec import ResolutionRequest, encode_message, make_request
    from resolver.native.http import NATIVE_HTTP_KEY
    from resolver.ops.resolutions import ResolutionCounter

    work = tempfile.mkdtemp(prefix="idnode-count-bench-")
    os.environ["IDNODE_ADMIN_SECRET"] = ADMIN_SECRET
    config = load_config(
        env={}, overrides={"data_dir": work, "native_port": 0, "log_level": "warning", "stats_flush_seconds": 3600}
    )
    app = create_app(config)
    server = TestServer(app)
    await server.start_server()
    try:
        state = app[STATE_KEY]
        assert state.registry is not None and state.resolver is not None
        handle = f"0.NA/{NODE}"  # the node's own prefix handle: on every node, cached locally once read
        native = app[NATIVE_HTTP_KEY].handler
        assert native is not None
        wire = encode_message(make_request(ResolutionRequest(handle, (), ()), request_id=7))
        envelope, payload = wire[:20], wire[20:]
        path = f"/api/handles/{handle}"

        request = make_mocked_request("GET", path, app=app)  # made once: mocks are slow to make

        async def rest() -> None:
            response = await resolve(request)
            assert response.status == 200

        async def udp() -> None:
            assert await native.respond(envelope, payload)

        counts: dict[str, int] = {}

        def bare() -> None:
            counts[NODE] = counts.get(NODE, 0) + 1

        counter = ResolutionCounter()

        def counted() -> None:
            counter.count(NODE, "rest")

        for _ in range(2000):  # warm the caches and memos
            await rest()
            await udp()
        real = state.resolutions
        results: dict[str, dict[str, list[float]]] = {k: {"with": [], "without": []} for k in ("count", "REST", "UDP")}
        for _ in range(rounds):
            for mode in ("without", "with"):
                counter_in_use: Any = real if mode == "with" else _NoCount()
                state.resolutions = counter_in_use
                native.resolutions = counter_in_use
                results["REST"][mode].append(await _time(rest, calls, True))
                results["UDP"][mode].append(await _time(udp, calls, True))
                results["count"][mode].append(await _time(counted if mode == "with" else bare, calls * 10, False))
        state.resolutions = native.resolutions = real
    finally:
        await server.close()

    print(f"resolution counting: {calls} calls per round ({calls * 10} for count), {rounds} rounds, fastest round")
    print("| what | without counting | with counting | difference | ratio without / with |")
    print("|---|---:|---:|---:|---:|")
    for what, r in results.items():
        without, with_ = min(r["without"]) * 1e9, min(r["with"]) * 1e9
        label = {"count": "count() vs a bare dict increment"}.get(what, f"{what} resolve (local-cache hit)")
        print(
            f"| {label} | {without:,.0f} ns | {with_:,.0f} ns | {with_ - without:+,.0f} ns | {without / with_:.3f}x |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.calls, args.rounds))
