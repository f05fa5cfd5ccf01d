"""What counting one native request costs: the node's meter against prometheus-client directly.

Per request the native listeners and handler count one UDP datagram in, one request by opcode and
responseCode with its latency, and one datagram out. Timed in one process, on a running event loop
(as in the node), in a loop of ``--requests`` iterations, three ways in the same run:

- ``baseline``: the two ``perf_counter()`` calls that time a request, nothing counted;
- ``meter``: what the node does (``resolver.ops.native_meter.NATIVE``: plain ints, flushed later;
  the flushes the meter schedules run in the timed loop's gaps and are included);
- ``direct``: prometheus-client's pre-bound label children incremented and observed per request.

Each mode runs in a subprocess of its own, once as a single process and once in prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set, as with ``--workers``: every increment writes a
memory-mapped file). Medians of ``--rounds``; the cost is the time above the baseline.

    .venv/bin/python -m benchmarks.native_metrics [--requests 300000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def _measure(mode: str, requests: int, rounds: int) -> list[float]:
    """Nanoseconds per request, one figure per round (run inside the subprocess)."""
    import asyncio
    import time
    from time import perf_counter

    from resolver.ops import metrics
    from resolver.ops.native_meter import NATIVE

    din = metrics.NATIVE_DATAGRAMS.labels("in")
    dout = metrics.NATIVE_DATAGRAMS.labels("out")
    answered = metrics.NATIVE_REQUESTS.labels("1", "1")
    latency = metrics.NATIVE_LATENCY.labels("1")

    def baseline() -> None:
        started = perf_counter()
        _ = perf_counter() - started

    def meter() -> None:
        started = perf_counter()
        NATIVE.datagrams_in += 1
        NATIVE.resolution(1, perf_counter() - started)
        NATIVE.datagrams_out += 1

    def direct() -> None:
        started = perf_counter()
        din.inc()
        answered.inc()
        latency.observe(perf_counter() - started)
        dout.inc()

    fn = {"baseline": baseline, "meter": meter, "direct": direct}[mode]

    async def run() -> list[float]:
        out = []
        for _ in range(rounds):
            started = time.perf_counter()
            for i in range(requests):
                fn()
                if i % 1000 == 0:
                    await asyncio.sleep(0)  # let the meter's scheduled flush run, as the node's loop would
            out.append((time.perf_counter() - started) / requests * 1e9)
        NATIVE.flush()
        return out

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"native metrics: {args.requests:,} requests x {args.rounds} rounds per mode, medians; {os.cpu_count()} CPUs")
    for multiprocess in (False, True):
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        with tempfile.TemporaryDirectory(prefix="idnode-prom-") as prom_dir:
            if multiprocess:
                env["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
            result = {}
            for mode in ("baseline", "meter", "direct"):
                child = ["--child", mode, str(args.requests), str(args.rounds)]
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.native_metrics", *child],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result[mode] = statistics.median(json.loads(out.stdout))
        base = result["baseline"]
        meter, direct = result["meter"] - base, result["direct"] - base
        label = "multiprocess (--workers)" if multiprocess else "single process"
        print(
            f"{label:26} baseline {base:6.0f} ns   meter +{meter:5.0f} ns   "
            f"prometheus-client directly +{direct:5.0f} ns   meter / direct {meter / direct:.2f}x"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
