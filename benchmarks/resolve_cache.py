"""Resolve throughput through the cache tiers, against a bare aiohttp handler, in one run.

Four servers, each with the same number of processes (SO_REUSEPORT) and driven by the same load
generator (``wrk`` if installed, else an aiohttp client in a separate process) at the same number
of connections, one after the other:

- ``bare``: an aiohttp handler on ``/api/handles/{handle}`` returning a fixed small JSON body
  (the baseline: what aiohttp alone costs on this machine);
- ``local``: idnode, local tier on (and Redis, as in production): every lookup is a local hit;
- ``redis``: idnode, local tier off, Redis on: every lookup is a Redis hit (coalesced MGETs);
- ``store``: idnode without any cache tier: every lookup reads the store (SQLite). It serves a store
  of its own, seeded alike: a node started with ``redis`` records its Redis in the store it serves
  (``resolver/cache/shared.py``), and a node without ``redis`` on that store would use it, so on the
  store the ``local`` and ``redis`` modes serve, this mode measured Redis hits.
- ``workers``: ``idnode serve --workers N`` as run by its supervisor, embedded store, no Redis: each
  worker keeps a local tier, the supervisor's worker hub carries invalidations (before issue 15 such
  a node kept no tier at all, i.e. ``store`` with N processes).

Requests pick one of ``--handles`` registered handles at random; caches are warmed before the
measured window. Prints requests/s, the ratio to ``bare``, p50 and p99 latency, and the cache
counters of one worker (so a run that did not hit the tier it claims shows it).

    .venv/bin/python -m benchmarks.resolve_cache
    .venv/bin/python -m benchmarks.resolve_cache --processes 2 --duration 20 --redis redis://127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ADMIN_SECRET = "benchmark-admin-secret"
NODE = "88.118.8"
MODES = ("bare", "local", "redis", "store", "workers")


# -- servers -------------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serve_bare(port: int) -> None:
    from aiohttp import web

    body = {"responseCode": 1, "handle": "88.118.8/bench-0", "values": [{"index": 1, "type": "URL"}]}

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/api/handles/{handle:.+}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def serve_one(mode: str, port: int, settings: dict[str, Any]) -> None:
    """The body of one server process."""
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    if mode == "bare":
        asyncio.run(_serve_bare(port))
        return
    from resolver.config import load_config
    from resolver.server import run, serve

    config = load_config(env={}, overrides={**settings, "port": port, "native_port": 0, "log_level": "warning"})
    if mode == "workers":  # the supervisor and its workers, as `idnode serve --workers N` runs them
        run(config)
        return
    asyncio.run(serve(config, reuse_port=True))


def start_servers(mode: str, processes: int, settings: dict[str, Any]) -> tuple[int, list[subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {**os.environ, "IDNODE_ADMIN_SECRET": ADMIN_SECRET}
    cmd = [sys.executable, "-m", "benchmarks.resolve_cache", "--serve", mode, str(port), json.dumps(settings)]
    count = 1 if mode == "workers" else processes  # the supervisor starts the workers itself
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL) for _ in range(count)]
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/handles/{NODE}/bench-0", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            stop_servers(procs)
            raise RuntimeError(f"{mode} server did not start")
        time.sleep(0.1)
    time.sleep(0.5)  # let every process finish starting (they share the port)
    return port, procs


def stop_servers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


# -- data ----------------------------------------------------------------------------------------
async def seed(store_url: str, count: int) -> list[str]:
    from registry.model import HandleValue, normalise_prefix, parse_handle
    from registry.service import NodeSettings, Registry
    from registry.stores import open_store
    from registry.stores.base import MUST_NOT_EXIST, HandleWrite

    store = await open_store(store_url)
    try:
        registry = Registry(store, NodeSettings(prefix=NODE))
        await registry.bootstrap(ADMIN_SECRET, None)
        handles = [f"{NODE}/bench-{i}" for i in range(count)]
        writes = []
        for h in handles:
            values = (
                HandleValue(index=1, type="URL", data=f"https://example.com/products/{h}".encode()),
                HandleValue(index=2, type="EMAIL", data=b"quality@example.com"),
                HandleValue(index=3, type="DESC", data="批次 2025-11 / lot 000123".encode()),
            )
            writes.append(HandleWrite(parse_handle(h).key, h, normalise_prefix(NODE), values, MUST_NOT_EXIST))
        for i in range(0, len(writes), 1000):  # straight into the fresh store: no node runs yet
            await store.write(writes[i : i + 1000], now=registry.clock())
        return handles
    finally:
        await store.close()


async def forget_shared(store_url: str) -> None:
    from registry.stores import open_store
    from resolver.cache.shared import forget_shared_cache

    store = await open_store(store_url)
    try:
        await forget_shared_cache(store)
    finally:
        await store.close()


async def purge_redis(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        names = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        for i in range(0, len(names), 500):
            await client.unlink(*names[i : i + 500])
    finally:
        await client.aclose()


# -- load ----------------------------------------------------------------------------------------
WRK_SCRIPT = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(port: int, paths_file: Path, connections: int, threads: int, duration: float) -> dict[str, float]:
    script = paths_file.with_suffix(".lua")
    script.write_text(WRK_SCRIPT % paths_file, encoding="utf-8")
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script)]
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in errors.groups()) if errors else 0)
    return {"rps": rps, "p50": p50, "p99": p99, "failed": failed}


async def _aiohttp_load(port: int, paths: list[str], connections: int, duration: float) -> dict[str, float]:
    import random

    import aiohttp

    latencies: list[float] = []
    failed = 0
    deadline = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as session:

        async def worker() -> None:
            nonlocal failed
            rng = random.Random()
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.get(rng.choice(paths)) as r:
                    await r.read()
                    if r.status != 200:
                        failed += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "failed": failed,
    }


def run_aiohttp(port: int, paths_file: Path, connections: int, duration: float) -> dict[str, float]:
    """The fallback load generator, in a process of its own (it must not share the servers' CPU time
    slice with the parent's bookkeeping)."""
    cmd = [sys.executable, "-m", "benchmarks.resolve_cache", "--load", str(port), str(paths_file)]
    cmd += [str(connections), str(duration)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor's workers), from Linux ``/proc``."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU time the server processes (and their children) have used so far (Linux
    ``/proc``; 0 elsewhere)."""
    total = 0
    try:
        for p in procs:
            for pid in _tree(p.pid):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    except (OSError, IndexError, ValueError):
        return 0.0
    return total / os.sysconf("SC_CLK_TCK")


def cache_stats(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return json.loads(r.read()).get("cache", {}).get("stats", {})
    except (OSError, ValueError):
        return {}


# -- main ----------------------------------------------------------------------------------------
def load_arguments(parser: argparse.ArgumentParser, *, duration: float, warmup: float) -> None:
    """The options of a run of servers under load (this benchmark's and ``proxy_resolve``'s)."""
    parser.add_argument("--processes", type=int, default=1, help="server processes per mode (default 1)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--duration", type=float, default=duration, help="seconds measured per mode and round")
    parser.add_argument("--warmup", type=float, default=warmup, help="seconds of warm-up load per mode and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds through all modes; medians are reported")
    parser.add_argument("--handles", type=int, default=1000)
    parser.add_argument("--loadgen", choices=["auto", "wrk", "aiohttp"], default="auto")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    load_arguments(parser, duration=10.0, warmup=3.0)
    parser.add_argument("--redis", default=os.environ.get("IDNODE_TEST_REDIS", "redis://127.0.0.1:6379"))
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    args = parser.parse_args(argv)
    loadgen = args.loadgen if args.loadgen != "auto" else ("wrk" if shutil.which("wrk") else "aiohttp")
    modes = [m for m in args.modes.split(",") if m]
    if "bare" not in modes:
        modes.insert(0, "bare")

    work = Path(tempfile.mkdtemp(prefix="idnode-bench-"))
    store_url = f"sqlite:///{work}/idnode.db"
    # Never opened by a node with Redis, so it records no shared cache (see the module docstring).
    uncached_url = f"sqlite:///{work}/uncached/idnode.db"
    prefix = f"idnode-bench:{uuid.uuid4().hex[:8]}:"
    handles = asyncio.run(seed(store_url, args.handles))
    if "store" in modes:
        asyncio.run(seed(uncached_url, args.handles))
    paths_file = work / "paths.txt"
    paths_file.write_text("".join(f"/api/handles/{h}\n" for h in handles), encoding="utf-8")
    paths = [f"/api/handles/{h}" for h in handles]
    base = {"data_dir": str(work), "store": store_url}
    settings = {
        "bare": {},
        "local": {**base, "redis": args.redis, "redis_key_prefix": prefix},
        "redis": {**base, "redis": args.redis, "redis_key_prefix": prefix, "cache_local_entries": 0},
        "store": {"data_dir": f"{work}/uncached", "store": uncached_url, "redis": "", "cache_local_entries": 0},
        "workers": {**base, "redis": "", "workers": args.processes},
    }

    def load(port: int, duration: float) -> dict[str, float]:
        if loadgen == "wrk":
            return run_wrk(port, paths_file, args.connections, args.threads, duration)
        return run_aiohttp(port, paths_file, args.connections, duration)

    print(
        f"resolve benchmark: {args.processes} server process(es) per mode, {args.connections} connections, "
        f"{args.duration:g} s per mode, {args.handles} handles, load generator {loadgen}, {os.cpu_count()} CPUs",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    try:
        for round_no in range(1, args.rounds + 1):
            # Modes interleave round by round, so a noisy neighbour slows every mode alike.
            for mode in modes:
                if mode == "workers":
                    # The Redis modes recorded their cache in the store, and a node started without
                    # redis would use it (resolver.cache.shared): this mode measures no Redis at all.
                    asyncio.run(forget_shared(store_url))
                port, procs = start_servers(mode, args.processes, settings[mode])
                try:
                    if mode != "bare":  # fill the tiers (every process) before measuring
                        for p in paths:
                            urllib.request.urlopen(f"http://127.0.0.1:{port}{p}", timeout=5).read()
                    load(port, args.warmup)
                    before = cache_stats(port)
                    cpu = cpu_seconds(procs)
                    r: dict[str, Any] = dict(load(port, args.duration))
                    cpu = cpu_seconds(procs) - cpu
                    after = cache_stats(port)
                    # Server CPU per request: what a request costs the server, whatever the neighbours do.
                    r["cpu_us"] = cpu * 1e6 / max(1.0, r["rps"] * args.duration)
                    r["stats"] = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                finally:
                    stop_servers(procs)
                runs[mode].append(r)
                if mode == "store" and (r["stats"].get("redis_hits") or r["stats"].get("local_hits")):
                    raise RuntimeError(f"the store mode hit a cache tier: {r['stats']}")
                print(
                    f"  round {round_no} {mode:<6} {r['rps']:>9.0f} req/s  p50 {r['p50']:6.2f} ms  "
                    f"p99 {r['p99']:6.2f} ms  server CPU {r['cpu_us']:5.0f} us/request",
                    flush=True,
                )
    finally:
        if any(m in modes for m in ("local", "redis")):
            asyncio.run(purge_redis(args.redis, prefix))
        shutil.rmtree(work, ignore_errors=True)

    results: dict[str, dict[str, Any]] = {}
    for mode, rs in runs.items():
        by_rps = sorted(rs, key=lambda r: r["rps"])
        middle = by_rps[len(by_rps) // 2]
        results[mode] = {
            "rps": middle["rps"],
            "p50": sorted(r["p50"] for r in rs)[len(rs) // 2],
            "p99": sorted(r["p99"] for r in rs)[len(rs) // 2],
            "failed": sum(r["failed"] for r in rs),
            "cpu_us": sorted(r["cpu_us"] for r in rs)[len(rs) // 2],
            "stats": middle["stats"],
        }
    bare = results["bare"]["rps"]
    bare_cpu = results["bare"]["cpu_us"] or 1.0
    print()
    print(f"medians of {args.rounds} round(s):")
    print(
        f"| mode | req/s | ratio to bare | p50 ms | p99 ms (c={args.connections}) | server CPU us/req "
        "| CPU ratio to bare | failed | counters (one worker) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        stats = r.get("stats") or {}
        shown = ", ".join(f"{k}={v}" for k, v in stats.items() if k in ("local_hits", "redis_hits", "store_loads"))
        print(
            f"| {mode} | {r['rps']:.0f} | {r['rps'] / bare:.2f}x | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| {r['cpu_us']:.0f} | {bare_cpu / r['cpu_us'] if r['cpu_us'] else 0:.2f}x "
            f"| {int(r['failed'])} | {shown or '-'} |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve_one(sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--load":
        port, file, conns, duration = int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
        paths = file.read_text(encoding="utf-8").split()
        print(json.dumps(asyncio.run(_aiohttp_load(port, paths, conns, duration))))
    else:
        main()
