"""``make bench``: start a node, seed it, run Locust headless for a bounded time, summarise.

1. Start ``idnode serve`` on a free port: the embedded defaults in a temporary data directory, or
   ``--store postgresql://…`` / ``--redis redis://…`` when given (``BENCH_STORE``/``BENCH_REDIS`` in
   the Makefile). Native protocol off (it is not under test here).
2. Seed it over the API like an operator would: promoters, enterprises (each with its own
   credentials), the bureau's auditor identity, and ``--handles`` identifiers through the batch API.
3. Run ``benchmarks/locustfile.py`` headless for ``--duration`` seconds with ``--users`` users.
4. Write Locust's CSV and HTML report and ``summary.md``/``summary.json`` (requests/s, failures,
   p50/p95/p99 per request type, and the machine) to ``benchmarks/results/``; stop the node by PID.

Exit status 1 when any request failed.

    .venv/bin/python -m benchmarks.run_locust --duration 60 --users 100
    .venv/bin/python -m benchmarks.run_locust --store postgresql://postgres@127.0.0.1/idnode_bench \\
        --redis redis://127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "benchmarks" / "locustfile.py"


# -- HTTP helpers (the standard library: the runner needs nothing the node does not) -------------
def _basic(identity: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{quote(identity, safe='')}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _call(base: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
          timeout: float = 300) -> tuple[int, Any]:  # fmt: skip
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def _json(base: str, method: str, path: str, obj: Any, auth: dict[str, str]) -> Any:
    status, reply = _call(base, method, path, json.dumps(obj).encode(), {**auth, "Content-Type": "application/json"})
    if status >= 300:
        raise SystemExit(f"seeding failed: {method} {path} answered {status}: {reply}")
    return reply


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _uscc(kind: str, n: int) -> str:
    from registry.uscc import uscc_check_char

    body = f"{kind}440111{n:09d}"[:17]
    return body + uscc_check_char(body)


# -- the node ------------------------------------------------------------------------------------
def start_node(args: argparse.Namespace, workdir: Path, admin_secret: str, run_id: str) -> tuple[subprocess.Popen, str]:
    port = args.port or _free_port()
    cmd = [
        sys.executable, "-c", "from resolver.cli import main; main()", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--native-port", "0",
        "--data-dir", str(workdir / "data"), "--workers", str(args.workers), "--log-level", "warning",
    ]  # fmt: skip
    if args.store:
        cmd += ["--store", args.store]
    if args.redis:
        cmd += ["--redis", args.redis, "--redis-key-prefix", f"idnode-bench:{run_id}:"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDNODE_", "PROMETHEUS_MULTIPROC"))}
    env["IDNODE_ADMIN_SECRET"] = admin_secret
    log = (workdir / "node.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the node exited with {proc.returncode}; see {workdir / 'node.log'}")
        try:
            if _call(base, "GET", "/readyz", timeout=2)[0] == 200:
                return proc, base
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    stop_node(proc)
    raise SystemExit("the node did not become ready within 60 s")


def stop_node(proc: subprocess.Popen) -> None:
    """SIGTERM to the node's PID (it finishes in-flight requests), SIGKILL to its group if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(45)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- seeding -------------------------------------------------------------------------------------
def seed(base: str, args: argparse.Namespace, prefix: str, admin_secret: str, run_id: str) -> dict[str, Any]:
    admin = _basic(f"300:0.NA/{prefix}", admin_secret)
    salt = random.Random(run_id).randrange(10**6)  # distinct credit codes per run (a reused database)
    promoters = []
    for i in range(args.promoters):
        p = _json(
            base,
            "POST",
            "/api/promoters",
            {"name": f"Bench promoter {run_id}-{i}", "uscc": _uscc("92", salt * 100 + i)},
            admin,
        )
        promoters.append(p["id"])
    enterprises = []
    for i in range(args.enterprises):
        body = {
            "name": f"Bench enterprise {run_id}-{i}",
            "uscc": _uscc("91", salt * 100 + i),
            "promoter": promoters[i % len(promoters)],
        }
        e = _json(base, "POST", "/api/enterprises", body, admin)
        enterprises.append({"prefix": e["prefix"], "identity": e["admin"], "secret": e["secret"]})
    auditor = _json(base, "POST", "/api/auditors", {"name": f"bench-{run_id}"}, admin)
    handles: list[str] = []
    chunk = 5000
    started = time.perf_counter()
    for i, ent in enumerate(enterprises):
        share = args.handles // len(enterprises) + (1 if i < args.handles % len(enterprises) else 0)
        auth = _basic(ent["identity"], ent["secret"])
        for start in range(0, share, chunk):
            names = [f"{ent['prefix']}/SKU-{run_id}-{n:07d}" for n in range(start, min(share, start + chunk))]
            lines = (
                json.dumps(
                    {"handle": h, "values": [{"index": 1, "type": "URL", "data": f"https://trace.example.com/{h}"}]}
                )
                for h in names
            )
            body = ("\n".join(lines) + "\n").encode()
            status, reply = _call(base, "POST", "/api/handles", body, {**auth, "Content-Type": "application/x-ndjson"})
            if status != 201 or reply.get("created") != len(names):
                raise SystemExit(f"seeding batch failed: {status} {str(reply)[:300]}")
            handles += names
    seconds = time.perf_counter() - started
    random.Random(run_id).shuffle(handles)
    return {
        "run_id": run_id,
        "handles": handles,
        "enterprises": enterprises,
        "promoters": promoters,
        "auditor": {"identity": auditor["identity"], "secret": auditor["secret"]},
        "seed_seconds": round(seconds, 2),
    }


# -- the report ----------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def summarise(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """summary.json and summary.md from the final stats the locustfile wrote when Locust quit."""
    final = json.loads((out / "final_stats.json").read_text())
    total = {**final["total"], "type": "all"}
    per_type = [{**e, "type": f"{e['method']} {e['name']}"} for e in final["per_type"]]
    summary = {**meta, "total": total, "per_type": per_type, "errors": final["errors"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    m = meta["machine"]
    node = (
        f"store {meta['store']}, Redis {meta['redis'] or 'none'}, {meta['workers']} worker(s); "
        f"{meta['handles']:,} seeded handles under {meta['enterprises']} enterprises "
        f"(seeded in {meta['seed_seconds']} s)"
    )
    load = (
        f"{meta['users']} users (spawn rate {meta['spawn_rate']}/s) for {meta['duration']} s; "
        f"Zipf s={meta['zipf_s']}, {meta['unknown_share']:.0%} unknown codes"
    )
    lines = [
        f"# Locust run {meta['started']}",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['os']}, Python {m['python']} "
        "(node and Locust share it)",
        f"- Node: {node}",
        f"- Load: {load}",
        "",
        f"**{total['rps']:,} requests/s, {total['requests']:,} requests, {total['failures']} failures**",
        "",
        "| request type | requests | failures | req/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in [*per_type, total]:
        lines.append(
            f"| {e['type']} | {e['requests']:,} | {e['failures']} | {e['rps']:,} | "
            f"{e['p50_ms']:g} | {e['p95_ms']:g} | {e['p99_ms']:g} |"
        )
    if final["errors"]:
        lines += ["", "Failures:", ""]
        lines += [f"- {e['occurrences']} × {e['name']}: {e['error']}" for e in final["errors"]]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
    ap.add_argument("--users", type=int, default=100, help="Locust users (default 100)")
    ap.add_argument("--spawn-rate", type=float, default=30, help="users started per second (default 30)")
    ap.add_argument("--handles", type=int, default=20_000, help="identifiers to seed (default 20,000)")
    ap.add_argument("--enterprises", type=int, default=4, help="enterprises to onboard (default 4)")
    ap.add_argument("--promoters", type=int, default=2, help="promoters (default 2)")
    ap.add_argument("--store", default="", help="store URL (default: embedded SQLite in a temporary directory)")
    ap.add_argument("--redis", default="", help="Redis URL for the shared cache tier (default: none)")
    ap.add_argument("--workers", type=int, default=1, help="node worker processes (default 1)")
    ap.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    ap.add_argument("--prefix", default="88.118.8", help="node prefix (default 88.118.8)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="report directory")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_id = secrets.token_hex(3)
    # With a reused database the node admin's secret is the one set on its first start.
    admin_secret = os.environ.get("BENCH_ADMIN_SECRET") or secrets.token_urlsafe(24)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory(prefix="idnode-bench-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        proc, base = start_node(args, workdir, admin_secret, run_id)
        print(f"bench: node pid {proc.pid} on {base} (store: {args.store or 'embedded SQLite'})", flush=True)
        try:
            seeded = seed(base, args, args.prefix, admin_secret, run_id)
            seed_file = workdir / "seed.json"  # holds credentials: stays in the temporary directory
            seed_file.write_text(json.dumps(seeded))
            print(f"bench: seeded {len(seeded['handles']):,} handles in {seeded['seed_seconds']} s; "
                  f"running Locust for {args.duration} s with {args.users} users", flush=True)  # fmt: skip
            env = {
                **os.environ,
                "IDNODE_BENCH_SEED": str(seed_file),
                "IDNODE_BENCH_STATS": str(out / "final_stats.json"),
            }
            locust = [
                sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", base,
                "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.duration}s", "--stop-timeout", "10",
                "--csv", str(out / "locust"), "--html", str(out / "locust.html"), "--only-summary",
                "--loglevel", "WARNING",
            ]  # fmt: skip
            result = subprocess.run(locust, cwd=ROOT, env=env, timeout=args.duration + 180)
        finally:
            stop_node(proc)
            print(f"bench: node stopped (exit {proc.returncode})", flush=True)
        if result.returncode not in (0, 1):  # 1: some requests failed (reported below)
            print((workdir / "node.log").read_text()[-3000:], file=sys.stderr)
            raise SystemExit(f"locust exited with {result.returncode}")
    meta = {
        "started": started,
        "machine": machine(),
        "store": "PostgreSQL" if args.store.startswith("postgres") else "embedded SQLite",
        "redis": "yes" if args.redis else "",
        "workers": args.workers,
        "handles": len(seeded["handles"]),
        "enterprises": args.enterprises,
        "seed_seconds": seeded["seed_seconds"],
        "users": args.users,
        "spawn_rate": args.spawn_rate,
        "duration": args.duration,
        "zipf_s": float(os.environ.get("IDNODE_BENCH_ZIPF_S", "1.1")),
        "unknown_share": float(os.environ.get("IDNODE_BENCH_UNKNOWN", "0.05")),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    summary = summarise(out, meta)
    print((out / "summary.md").read_text())
    print(f"bench: report in {out} (locust.html, locust_stats.csv, summary.md); {meta['wall_seconds']} s in all")
    return 1 if summary["total"].get("failures", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
