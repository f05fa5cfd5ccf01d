"""Resolution for people against the JSON API, in one run: the proxy's 302 and its landing pages from
the memo, as ratios to ``GET /api/handles/{handle}`` local-cache hits.

One idnode server (the same processes for every mode, local cache tier on, SQLite) with ``--handles``
identifiers that carry a URL value, an email, a description and a metadata template's fields. Each
round drives the server with the same load generator (``wrk`` if installed, else an aiohttp client in
a separate process) at the same number of connections, mode after mode:

- ``json``: ``GET /api/handles/{handle}`` — the baseline (a local-cache hit, public JSON rendered once
  per record);
- ``redirect``: ``GET /{handle}`` — the proxy's 302 to the URL value;
- ``page``: ``GET /{handle}?noredirect`` — the landing page (Chinese), from the page memo;
- ``linkset``: ``GET /{handle}`` with ``Accept: application/linkset+json`` (reported, no target).

Every path is requested once before the rounds, so every mode measures hits (of the cache tier, and
of the proxy's memos). Modes interleave round by round; medians are reported, with the server's CPU
time per request. Targets (issue 12): redirect >= 0.8x json, page >= 0.5x json.

    .venv/bin/python -m benchmarks.proxy_resolve
    .venv/bin/python -m benchmarks.proxy_resolve --processes 2 --duration 10 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.resolve_cache import (
    ADMIN_SECRET,
    NODE,
    cpu_seconds,
    load_arguments,
    run_aiohttp,
    run_wrk,
    start_servers,
    stop_servers,
)

MODES = ("json", "redirect", "page", "linkset")
TARGETS = {"redirect": 0.8, "page": 0.5}
HEADERS = {"linkset": {"Accept": "application/linkset+json"}}


async def seed(store_url: str, count: int) -> list[str]:
    """``count`` identifiers under the node's prefix, with a node-wide template of four fields."""
    from registry.model import HandleValue, normalise_prefix, parse_handle
    from registry.service import NodeSettings, Registry
    from registry.stores import open_store
    from registry.stores.base import MUST_NOT_EXIST, HandleWrite
    from registry.templates import Template, TemplateField

    store = await open_store(store_url)
    try:
        registry = Registry(store, NodeSettings(prefix=NODE))
        await registry.bootstrap(ADMIN_SECRET, None)
        fields = (
            TemplateField(2001, "产品名称", "PRODUCT_NAME"),
            TemplateField(2002, "batch", "BATCH_NO"),
            TemplateField(2003, "color", "COLOR"),
            TemplateField(2004, "gs1:traceability", "URL"),
        )
        template = Template("bench", 1, "", fields, "benchmark products")
        await store.add_template("", "bench", 1, template.fields_json(), now=registry.clock())
        handles = [f"{NODE}/bench-{i}" for i in range(count)]
        writes = []
        for i, h in enumerate(handles):
            values = (
                HandleValue(index=1, type="URL", data=f"https://example.com/products/{h}".encode()),
                HandleValue(index=2, type="EMAIL", data=b"quality@example.com"),
                HandleValue(index=3, type="DESC", data="批次 2025-11 / lot 000123".encode()),
                HandleValue(index=1001, type="TEMPLATE", data=b"bench@1"),
                HandleValue(index=2001, type="PRODUCT_NAME", data="智能电动螺丝刀".encode()),
                HandleValue(index=2002, type="BATCH_NO", data=f"B2025-11-{i:06d}".encode()),
                HandleValue(index=2003, type="COLOR", data="曜石黑".encode()),
                HandleValue(index=2004, type="URL", data=f"https://trace.example.com/{i}".encode()),
            )
            writes.append(HandleWrite(parse_handle(h).key, h, normalise_prefix(NODE), values, MUST_NOT_EXIST))
        for i in range(0, len(writes), 1000):  # straight into the fresh store: no node runs yet
            await store.write(writes[i : i + 1000], now=registry.clock())
        return handles
    finally:
        await store.close()


WRK_HEADERS = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function() return wrk.format("GET", paths[math.random(#paths)], {["Accept"] = "%s"}) end
"""


def _paths(mode: str, handles: list[str]) -> list[str]:
    if mode == "json":
        return [f"/api/handles/{h}" for h in handles]
    if mode == "page":
        return [f"/{h}?noredirect" for h in handles]
    return [f"/{h}" for h in handles]


def _warm(port: int, paths: list[str], headers: dict[str, str]) -> None:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    for p in paths:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{p}", headers=headers)
        try:
            opener.open(request, timeout=5).read()
        except urllib.error.HTTPError as exc:  # the 302s
            if exc.code != 302:
                raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    load_arguments(parser, duration=8.0, warmup=2.0)
    args = parser.parse_args(argv)
    loadgen = args.loadgen if args.loadgen != "auto" else ("wrk" if shutil.which("wrk") else "aiohttp")
    # The aiohttp load generator sends no Accept header: the linkset runs need wrk.
    modes = MODES if loadgen == "wrk" else tuple(m for m in MODES if m not in HEADERS)

    work = Path(tempfile.mkdtemp(prefix="idnode-bench-proxy-"))
    store_url = f"sqlite:///{work}/idnode.db"
    handles = asyncio.run(seed(store_url, args.handles))
    files: dict[str, Path] = {}
    for mode in modes:
        files[mode] = work / f"{mode}.txt"
        files[mode].write_text("".join(p + "\n" for p in _paths(mode, handles)), encoding="utf-8")
    settings = {"data_dir": str(work), "store": store_url, "redis": ""}  # local tier only (the embedded default)

    def load(port: int, mode: str, duration: float) -> dict[str, float]:
        if loadgen == "wrk":
            if mode in HEADERS:
                script = work / f"{mode}.lua"
                script.write_text(WRK_HEADERS % (files[mode], HEADERS[mode]["Accept"]), encoding="utf-8")
                cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s", "--latency"]
                out = subprocess.run(
                    [*cmd, "-s", str(script), f"http://127.0.0.1:{port}"], capture_output=True, text=True
                )
                return _parse_wrk(out.stdout)
            return run_wrk(port, files[mode], args.connections, args.threads, duration)
        return run_aiohttp(port, files[mode], args.connections, duration)

    print(
        f"proxy benchmark: {args.processes} server process(es), {args.connections} connections, "
        f"{args.duration:g} s per mode and round, {args.handles} handles, load generator {loadgen}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    port, procs = start_servers("local", args.processes, settings)
    try:
        for mode in modes:  # fill the cache tier and the proxy's memos of every process
            for _ in range(args.processes):
                _warm(port, _paths(mode, handles), HEADERS.get(mode, {}))
        for round_no in range(1, args.rounds + 1):
            for mode in modes:
                load(port, mode, args.warmup)
                cpu = cpu_seconds(procs)
                r: dict[str, Any] = dict(load(port, mode, args.duration))
                cpu = cpu_seconds(procs) - cpu
                r["cpu_us"] = cpu * 1e6 / max(1.0, r["rps"] * args.duration)
                runs[mode].append(r)
                print(
                    f"  round {round_no} {mode:<8} {r['rps']:>9.0f} req/s  p50 {r['p50']:6.2f} ms  "
                    f"p99 {r['p99']:6.2f} ms  server CPU {r['cpu_us']:5.0f} us/request  failed {int(r['failed'])}",
                    flush=True,
                )
    finally:
        stop_servers(procs)
        shutil.rmtree(work, ignore_errors=True)

    results = {}
    for mode, rs in runs.items():
        by_rps = sorted(rs, key=lambda r: r["rps"])
        results[mode] = {
            "rps": by_rps[len(rs) // 2]["rps"],
            "p50": sorted(r["p50"] for r in rs)[len(rs) // 2],
            "p99": sorted(r["p99"] for r in rs)[len(rs) // 2],
            "cpu_us": sorted(r["cpu_us"] for r in rs)[len(rs) // 2],
            "failed": sum(r["failed"] for r in rs),
        }
    base = results["json"]["rps"]
    base_cpu = results["json"]["cpu_us"] or 1.0
    print()
    print(f"medians of {args.rounds} round(s):")
    head = f"| mode | req/s | ratio to json | target | p50 ms | p99 ms (c={args.connections}) "
    print(head + "| server CPU us/req (ratio) | failed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode, r in results.items():
        target = f">= {TARGETS[mode]}x" if mode in TARGETS else "-"
        print(
            f"| {mode} | {r['rps']:.0f} | {r['rps'] / base:.2f}x | {target} | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| {r['cpu_us']:.0f} ({base_cpu / r['cpu_us'] if r['cpu_us'] else 0:.2f}x) | {int(r['failed'])} |"
        )
    print(json.dumps({m: round(r["rps"] / base, 3) for m, r in results.items()}))


def _parse_wrk(out: str) -> dict[str, float]:
    """wrk's output read as run_wrk reads it (for the runs with an Accept header)."""
    import re

    from benchmarks.resolve_cache import _ms

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "failed": int(bad.group(1)) if bad else 0}


if __name__ == "__main__":
    main(sys.argv[1:])
