"""Resolution latency while bulk writes run, seen by an independent client (no Locust).

Starts ``idnode serve`` (1 worker; embedded SQLite, or ``--store``) as ``make bench`` does, seeds 2,000
identifiers, then one client thread resolves a seeded (cached) identifier every 10 ms over a
keep-alive connection through three phases: **idle** (the baseline, same run), **batch** (one
``--rows``-item NDJSON ``POST /api/handles``) and **job** (one ``--rows``-row CSV import job, submitted
and polled until done). Two more phases on request: **xlsx-job** (the same job from an XLSX
workbook) and **labels** (one 1,000-label PDF sheet, ``GET /api/labels``). Prints per phase the
probes made, p50/p95/p99 and the longest, and the ratio of each phase's p99 to the idle one.

    .venv/bin/python -m benchmarks.resolve_during_import [--rows 100000] [--store postgresql://…]
        [--phases idle,batch,job,xlsx-job,labels]   # the idle baseline always runs first
        [--slow-callbacks 20]   # also list the node's event-loop callbacks over 20 ms (asyncio debug mode)
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.profiles import SeedPlan
from benchmarks.run_locust import NodeOptions, _basic, _call, seed, start_node, stop_node

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _quantiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    at = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    return {"n": len(xs), "p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": xs[-1]}


class Prober:
    """Resolves one handle every ``pause`` seconds in a thread; ``phase(fn)`` returns the latencies
    (ms) seen while ``fn`` ran."""

    def __init__(self, base: str, handle: str, pause: float = 0.01) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.path, self.pause = f"/api/handles/{handle}", pause
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            self.conn.request("GET", self.path)
            reply = self.conn.getresponse()
            reply.read()
            if reply.status != 200:
                raise SystemExit(f"probe answered {reply.status}")
            self.samples.append((time.perf_counter() - t) * 1000)
            time.sleep(self.pause)

    def phase(self, fn: Callable[[], str]) -> tuple[str, dict[str, float]]:
        self.samples = []
        note = fn()
        return note, _quantiles(self.samples)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


# Put first on the node's PYTHONPATH by --slow-callbacks: uvloop's loops in asyncio's debug mode, which
# logs every callback that runs longer than the threshold ("Executing <Task …> took 0.123 seconds").
_SLOW_SITECUSTOMIZE = """\
import os
import uvloop

_factory = uvloop.EventLoopPolicy._loop_factory


def _debug_loop(self):
    loop = _factory(self)
    loop.set_debug(True)
    loop.slow_callback_duration = float(os.environ["BENCH_SLOW_CALLBACK_MS"]) / 1000
    return loop


uvloop.EventLoopPolicy._loop_factory = _debug_loop
"""
_SLOW = re.compile(r"Executing (.*?) took ([0-9.]+) seconds")


def _slow_callbacks(log: Path, start: int) -> str:
    """The slow callbacks the node logged since byte ``start`` of its log: how many, the longest."""
    took = []
    for match in _SLOW.finditer(log.read_bytes()[start:].decode("utf-8", "replace")):
        what = re.search(r"coro=<(\S+?)\(", match.group(1))
        took.append((float(match.group(2)) * 1000, what.group(1) if what else match.group(1)[:60]))
    took.sort(reverse=True)
    return f"{len(took)}: " + ", ".join(f"{ms:.0f} ms {what}" for ms, what in took[:3]) if took else "0"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="items of the batch and rows of the job (100,000)")
    ap.add_argument("--idle", type=float, default=5, help="seconds of the idle phase (default 5)")
    ap.add_argument("--store", default="", help="store URL (default: embedded SQLite in a temporary directory)")
    ap.add_argument(
        "--phases", default="idle,batch,job",
        help="phases to run, in this order, of idle, batch, job, xlsx-job, labels (default idle,batch,job)",
    )  # fmt: skip
    ap.add_argument(
        "--slow-callbacks", type=float, default=0, metavar="MS",
        help="run the node's event loop in asyncio's debug mode and list the callbacks longer than MS per phase",
    )  # fmt: skip
    args = ap.parse_args(argv)
    secret, run_id = secrets.token_urlsafe(18), secrets.token_hex(3)
    with tempfile.TemporaryDirectory(prefix="idnode-bench-") as tmp:
        log = Path(tmp) / "node.log"
        if args.slow_callbacks > 0:
            (Path(tmp) / "sitecustomize.py").write_text(_SLOW_SITECUSTOMIZE)
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH", "")]))
            os.environ["BENCH_SLOW_CALLBACK_MS"] = str(args.slow_callbacks)
        node = start_node(NodeOptions(store=args.store), Path(tmp), secret, run_id)
        try:
            seeded = seed(node.base, SeedPlan(handles=2000, promoters=1, enterprises=2), "88.118.8", secret, run_id)
            ent = seeded["enterprises"][0]
            auth = _basic(ent["identity"], ent["secret"])
            prober = Prober(node.base, seeded["handles"][0])

            def idle() -> str:
                time.sleep(args.idle)
                return f"{args.idle:g} s"

            def batch() -> str:
                body = "".join(
                    f'{{"handle":"{ent["prefix"]}/RB-{run_id}-{n:07d}","values":[{{"index":1,"type":"URL",'
                    f'"data":"https://erp.example.com/{n}"}}]}}\n'
                    for n in range(args.rows)
                ).encode()
                t = time.perf_counter()
                status, reply = _call(node.base, "POST", "/api/handles", body,
                                      {**auth, "Content-Type": "application/x-ndjson"}, timeout=900)  # fmt: skip
                if status != 201:
                    raise SystemExit(f"batch answered {status}: {str(reply)[:200]}")
                return f"{args.rows:,} items in {time.perf_counter() - t:.1f} s"

            def workbook() -> bytes:
                import openpyxl

                book = openpyxl.Workbook(write_only=True)
                sheet = book.create_sheet()
                sheet.append(["suffix", "URL"])
                for n in range(args.rows):
                    sheet.append([f"RX-{run_id}-{n:07d}", f"https://erp.example.com/{n}"])
                out = io.BytesIO()
                book.save(out)
                return out.getvalue()

            # Made before the phases: seconds of pure Python here would starve this process's own
            # prober thread of the GIL, and its waits would be counted as the node's.
            xlsx_body = workbook() if "xlsx-job" in args.phases.split(",") else b""

            def job(xlsx: bool = False) -> str:
                if xlsx:
                    body, headers = xlsx_body, {**auth, "Content-Type": XLSX}
                else:
                    rows = "".join(f"RJ-{run_id}-{n:07d},https://erp.example.com/{n}\n" for n in range(args.rows))
                    body, headers = ("suffix,URL\n" + rows).encode(), {**auth, "Content-Type": "text/csv"}
                t = time.perf_counter()
                status, reply = _call(node.base, "POST", f"/api/jobs?kind=import&prefix={ent['prefix']}", body, headers)
                if status != 202:
                    raise SystemExit(f"job submit answered {status}: {str(reply)[:200]}")
                submitted = time.perf_counter() - t
                while True:
                    time.sleep(0.5)
                    _, state = _call(node.base, "GET", f"/api/jobs/{reply['id']}", None, auth)
                    if state["state"] in ("done", "failed"):
                        break
                return (f"{args.rows:,} rows {state['state']} in {time.perf_counter() - t:.1f} s "
                        f"(submitted in {submitted:.1f} s)")  # fmt: skip

            def labels() -> str:
                t = time.perf_counter()
                status, reply = _call(node.base, "GET", f"/api/labels?prefix={ent['prefix']}&count=1000", None, auth,
                                      timeout=300)  # fmt: skip
                if status != 200:
                    raise SystemExit(f"labels answered {status}: {str(reply)[:200]}")
                return f"a PDF label sheet in {time.perf_counter() - t:.1f} s ({len(reply):,} bytes)"

            phases = {"idle": idle, "batch": batch, "job": job, "xlsx-job": lambda: job(xlsx=True), "labels": labels}
            wanted = [name for name in args.phases.split(",") if name in phases] or ["idle"]
            results, slow = [], []
            for name in ["idle", *(n for n in wanted if n != "idle")]:
                start = log.stat().st_size
                results.append((name, *prober.phase(phases[name])))
                slow.append(_slow_callbacks(log, start) if args.slow_callbacks > 0 else "")
            prober.close()
        finally:
            stop_node(node.proc)
    base_p99 = results[0][2]["p99"]
    print(f"store: {args.store or 'embedded SQLite'}; one client resolving a cached handle every 10 ms")
    print("| phase | what ran | probes | p50 ms | p95 ms | p99 ms | longest ms | p99 ÷ idle |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (name, note, q), callbacks in zip(results, slow, strict=True):
        print(f"| {name} | {note} | {q['n']} | {q['p50']:.1f} | {q['p95']:.1f} | {q['p99']:.1f} | {q['max']:.0f} | "
              f"{q['p99'] / base_p99:.1f}x |")  # fmt: skip
        if callbacks:
            print(f"|   | node callbacks over {args.slow_callbacks:g} ms: {callbacks} | | | | | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
