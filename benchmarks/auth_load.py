"""Secret-key checks under load: anonymous GET latency while clients guess passwords, and PUT
throughput with Basic credentials on every request (pyhandle's pattern).

Starts a real ``idnode serve`` (SQLite, one worker) from a source tree, onboards an enterprise over
the admin API, then measures:

1. anonymous ``GET`` latency, one request at a time, in ``--blocks`` alternating blocks: idle (the
   baseline), then while ``--guessers`` clients (another process) guess the node administrator's
   secret, and so on; each guesser sends its next guess when the previous one is answered, at most
   one per ``--guess-interval`` (50 ms), every guess a different wrong secret. Alternating blocks
   let the machine's own noise fall on baseline and load alike;
2. ``PUT`` throughput: ``--clients`` concurrent clients, each creating handles one after another
   with the enterprise's Basic credentials on every request, for ``--seconds``; then the same while
   the guessers guess.

The throttle is set out of reach (``IDNODE_AUTH_THROTTLE_FAILURES=1000000``) so that every guess
that gets a pool slot costs a full scrypt check: the worst case for the event loop. ``--before PATH``
runs the same against another source tree (e.g. the commit before the change, checked out with
``git worktree add /tmp/before 6923f8a``), in the same run, rounds alternating the order, and prints
the medians of the rounds with ratios.

    .venv/bin/python -m benchmarks.auth_load [--before /tmp/before] [--rounds 3] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from registry.uscc import uscc_check_char

SECRET = "bench-admin-secret"
PREFIX = "88.118.8"
ROOT = Path(__file__).resolve().parents[1]
IDNODE = str(Path(sys.executable).with_name("idnode"))


def uscc(kind: str) -> str:
    body = f"{kind}4401110000000{kind}"[:17]
    return body + uscc_check_char(body)


def basic(identity: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{quote(identity, safe='')}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Node:
    def __init__(self, tree: Path, data_dir: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDNODE_")}
        env.update(
            PYTHONPATH=str(tree),
            IDNODE_ADMIN_SECRET=SECRET,
            IDNODE_AUTH_THROTTLE_FAILURES="1000000",  # unknown to older trees, which ignore it
        )
        self.log = open(Path(data_dir) / "serve.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [IDNODE, "serve", "--port", str(self.port), "--data-dir", data_dir, "--native-port", "0"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"idnode serve exited: {Path(data_dir, 'serve.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/handles/0.NA/{PREFIX}", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("idnode serve did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


async def onboard(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    admin = basic(f"300:0.NA/{PREFIX}", SECRET)
    async with session.post(f"{url}/api/promoters", json={"name": "P", "uscc": uscc("92")}, headers=admin) as r:
        promoter = await r.json()
        assert r.status == 201, promoter
    body = {"name": "E", "uscc": uscc("91"), "promoter": promoter["id"]}
    async with session.post(f"{url}/api/enterprises", json=body, headers=admin) as r:
        ent = await r.json()
        assert r.status == 201, ent
    headers = basic(ent["admin"], ent["secret"])
    target = f"{url}/api/handles/{ent['prefix']}/probe"
    async with session.put(
        target, json={"values": [{"index": 1, "type": "URL", "data": "https://e.x"}]}, headers=headers
    ) as r:
        assert r.status == 201, await r.text()
    return {"prefix": ent["prefix"], "headers": headers}


def _guess_main(url: str, guessers: int, interval: float, active: Any, stop: Any, out: Any) -> None:
    """The guessers, in their own process so they do not share the prober's event loop; they guess
    while ``active`` is set."""

    async def main() -> None:
        counts: dict[int, int] = {}
        sent = 0

        async def guesser(g: int) -> None:
            nonlocal sent
            async with aiohttp.ClientSession() as session:
                n = 0
                while not stop.is_set():
                    if not active.is_set():
                        await asyncio.sleep(0.02)
                        continue
                    started = time.perf_counter()
                    headers = basic(f"300:0.NA/{PREFIX}", f"guess-{g}-{n}")
                    try:
                        async with session.put(f"{url}/api/handles/{PREFIX}/guess", json=[], headers=headers) as r:
                            await r.read()
                            counts[r.status] = counts.get(r.status, 0) + 1
                    except aiohttp.ClientError:
                        counts[0] = counts.get(0, 0) + 1
                    sent += 1
                    n += 1
                    await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))

        tasks = [asyncio.create_task(guesser(g)) for g in range(guessers)]
        active_for = 0.0
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.05)
            if active.is_set():
                active_for += time.perf_counter() - t0
        await asyncio.gather(*tasks)
        out.put({"counts": counts, "rate": sent / max(active_for, 1e-9)})

    asyncio.run(main())


class Guessers:
    """The guessing process; :meth:`on` and :meth:`off` start and pause the guessing."""

    def __init__(self, url: str, guessers: int, interval: float) -> None:
        ctx = mp.get_context("spawn")
        self.active = ctx.Event()
        self.stop_event = ctx.Event()
        self.out = ctx.Queue()
        self.proc = ctx.Process(
            target=_guess_main, args=(url, guessers, interval, self.active, self.stop_event, self.out)
        )
        self.proc.start()

    async def on(self) -> None:
        self.active.set()
        await asyncio.sleep(0.5)  # the pool fills

    async def off(self) -> None:
        self.active.clear()
        await asyncio.sleep(0.5)  # answers in flight drain

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        result = self.out.get(timeout=300)
        self.proc.join(timeout=30)
        return result


async def get_samples(url: str, handle: str, n: int, seconds: float) -> list[float]:
    """Up to ``n`` anonymous GETs one after another (fewer if ``seconds`` run out first), in ms."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            if time.perf_counter() > deadline and len(samples) >= 5:
                break
            t0 = time.perf_counter()
            async with session.get(f"{url}/api/handles/{handle}") as r:
                await r.read()
                assert r.status == 200
            samples.append((time.perf_counter() - t0) * 1000)
    return samples


def latency(samples: list[float]) -> dict[str, float]:
    return {
        "p50": statistics.median(samples),
        "p95": pct(samples, 0.95),
        "p99": pct(samples, 0.99),
        "n": len(samples),
    }


async def put_throughput(url: str, ent: dict[str, Any], clients: int, seconds: float, tag: str) -> dict[str, float]:
    samples: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(c: int) -> None:
        nonlocal errors
        n = 0
        async with aiohttp.ClientSession() as session:  # one connection per client, as pyhandle keeps one
            while time.perf_counter() < deadline:
                body = {"values": [{"index": 1, "type": "URL", "data": f"https://example.com/{c}/{n}"}]}
                t0 = time.perf_counter()
                target = f"{url}/api/handles/{ent['prefix']}/{tag}-{c}-{n}"
                async with session.put(target, json=body, headers=ent["headers"]) as r:
                    await r.read()
                    if r.status != 201:
                        errors += 1
                samples.append((time.perf_counter() - t0) * 1000)
                n += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed = time.perf_counter() - t0
    return {
        "rate": len(samples) / elapsed,
        "p50": statistics.median(samples),
        "p95": pct(samples, 0.95),
        "errors": errors,
    }


async def run_tree(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Idle and guessing GET latency in alternating blocks (so the machine's own noise falls on both
    alike), then PUT throughput without and with guessing."""
    with tempfile.TemporaryDirectory() as tmp:
        node = Node(tree, tmp)
        guessers = Guessers(node.url, args.guessers, args.guess_interval)
        try:
            async with aiohttp.ClientSession() as session:
                ent = await onboard(session, node.url)
            probe = f"{ent['prefix']}/probe"
            await get_samples(node.url, probe, 200, 10)  # warm-up
            idle: list[float] = []
            guessed: list[float] = []
            per_block = max(1, args.gets // args.blocks)
            for _ in range(args.blocks):
                idle += await get_samples(node.url, probe, per_block, args.get_seconds / args.blocks)
                await guessers.on()
                guessed += await get_samples(node.url, probe, per_block, args.get_seconds / args.blocks)
                await guessers.off()
            quiet_put = await put_throughput(node.url, ent, args.clients, args.seconds, "quiet")
            await guessers.on()
            loaded_put = await put_throughput(node.url, ent, args.clients, args.seconds, "loaded")
            await guessers.off()
        finally:
            guess_stats = guessers.stop()
            node.stop()
    return {
        "idle": latency(idle),
        "guessed": latency(guessed),
        "guesses": guess_stats,
        "put": quiet_put,
        "put_guessed": loaded_put,
    }


def report(name: str, r: dict[str, Any]) -> None:
    idle, guessed = r["idle"], r["guessed"]
    print(f"\n== {name}")
    print(
        f"anonymous GET idle        n {idle['n']:.0f}  p50 {idle['p50']:.2f} ms  p95 {idle['p95']:.2f} ms  "
        f"p99 {idle['p99']:.2f} ms"
    )
    print(
        f"anonymous GET, guessing   n {guessed['n']:.0f}  p50 {guessed['p50']:.2f} ms  p95 {guessed['p95']:.2f} ms  "
        f"p99 {guessed['p99']:.2f} ms   -> p95 ratio {guessed['p95'] / idle['p95']:.2f}x idle"
    )
    guesses = r["guesses"]
    print(f"  guesses (while on): {guesses['rate']:.0f}/s, replies by status {dict(sorted(guesses['counts'].items()))}")
    for key, label in (("put", "PUT, Basic every request"), ("put_guessed", "PUT, same, while guessing")):
        p = r[key]
        print(f"{label:26}{p['rate']:8.0f}/s  p50 {p['p50']:.1f} ms  p95 {p['p95']:.1f} ms  errors {p['errors']}")


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Metric by metric, the median over rounds (guess counts are summed)."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if key.startswith("guesses"):
            counts: dict[int, int] = {}
            for run in runs:
                for status, n in run[key]["counts"].items():
                    counts[status] = counts.get(status, 0) + n
            out[key] = {"counts": counts, "rate": statistics.median(run[key]["rate"] for run in runs)}
        else:
            out[key] = {m: statistics.median(run[key][m] for run in runs) for m in value}
    return out


async def main(args: argparse.Namespace) -> None:
    trees = [("after (this tree)", ROOT)]
    if args.before:
        trees.insert(0, ("before", Path(args.before).resolve()))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    for round_no in range(args.rounds):
        for name, tree in trees if round_no % 2 == 0 else trees[::-1]:
            runs[name].append(await run_tree(tree, args))
            report(f"{name}, round {round_no + 1}", runs[name][-1])
    results = {name: median_of(r) for name, r in runs.items()}
    for name, result in results.items():
        report(f"{name}: medians of {args.rounds} round(s)", result)
    if args.before:
        before, after = results["before"], results["after (this tree)"]
        print("\n== after / before")
        print(f"GET p95 while guessing:   {after['guessed']['p95']:.2f} ms vs {before['guessed']['p95']:.2f} ms")
        for key in ("put", "put_guessed"):
            print(
                f"{key:24}  {after[key]['rate'] / before[key]['rate']:.2f}x throughput, "
                f"p50 {after[key]['p50']:.1f} vs {before[key]['p50']:.1f} ms"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="another source tree to measure in the same run (the baseline)")
    parser.add_argument("--gets", type=int, default=2000, help="GETs idle, and as many while guessing")
    parser.add_argument("--get-seconds", type=float, default=60.0, help="longest all GETs of one kind run")
    parser.add_argument("--blocks", type=int, default=10, help="alternating idle/guessing blocks of GETs")
    parser.add_argument("--guessers", type=int, default=8)
    parser.add_argument(
        "--guess-interval", type=float, default=0.05, help="least seconds between one guesser's guesses"
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent PUT clients")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each PUT measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (trees alternate order); medians reported")
    asyncio.run(main(parser.parse_args()))
