"""``make bench``: start a node, seed it, run one load profile in Locust headless, judge it, summarise.

1. Start ``idnode serve`` on a free port: the embedded defaults in a temporary data directory, or
   ``--store postgresql://…`` / ``--redis redis://…`` when given (``BENCH_STORE``/``BENCH_REDIS`` in
   the Makefile). The native protocol is off unless the profile resolves over it (``native``).
2. Seed it as the profile needs, like an operator would, over the API: promoters, enterprises (each
   with its own credentials), the bureau's auditor identities, and identifiers through the NDJSON
   batch API.
3. Run the profile's Locust file (``benchmarks/profiles/``; ``mixed`` is ``benchmarks/locustfile.py``)
   headless at the profile's documented load, or at ``--users``/``--spawn-rate``/``--duration``.
4. Write Locust's CSV and HTML report and ``summary.md``/``summary.json`` (requests/s, failures,
   p50/p95/p99 per request type, the machine, the criterion and its verdict) to
   ``benchmarks/results/<profile>/``; stop the node by PID.

Exit status 1 when the profile's pass criterion fails: any failed request, or no request of one of
the kinds the profile must make.

    .venv/bin/python -m benchmarks.run_locust --profile scan-campaign
    .venv/bin/python -m benchmarks.run_locust --profile mixed --duration 60 --users 100 \\
        --store postgresql://postgres@127.0.0.1/idnode_bench --redis redis://127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import itertools
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchmarks.profiles import PROFILES, Profile, SeedPlan, check, profile

ROOT = Path(__file__).resolve().parents[1]


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


def _free_port(udp: bool = False) -> int:
    """A free loopback TCP port (``udp``: free for UDP too, for the native listener)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if not udp:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise SystemExit("no free port")


def _uscc(kind: str, n: int) -> str:
    from registry.uscc import uscc_check_char

    body = f"{kind}440111{n:09d}"[:17]
    return body + uscc_check_char(body)


# -- the node ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeOptions:
    store: str = ""  # empty: embedded SQLite in the work directory
    redis: str = ""
    workers: int = 1
    port: int = 0  # 0: a free one
    native: bool = False  # the native UDP/TCP listener on a free port, with no per-address UDP budget
    prefix: str = "88.118.8"


@dataclass(frozen=True)
class Node:
    proc: subprocess.Popen
    base: str  # http://127.0.0.1:PORT
    native: str  # 127.0.0.1:PORT of the native listener, or ""


def start_node(opts: NodeOptions, workdir: Path, admin_secret: str, run_id: str) -> Node:
    port = opts.port or _free_port()
    native_port = _free_port(udp=True) if opts.native else 0
    cmd = [
        sys.executable, "-c", "from resolver.cli import main; main()", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--native-port", str(native_port), "--prefix", opts.prefix,
        "--data-dir", str(workdir / "data"), "--workers", str(opts.workers), "--log-level", "warning",
    ]  # fmt: skip
    if opts.native:  # one load generator is one client address: no per-address reply budget
        cmd += ["--native-udp-budget", "0"]
    if opts.store:
        cmd += ["--store", opts.store]
    if opts.redis:
        cmd += ["--redis", opts.redis, "--redis-key-prefix", f"idnode-bench:{run_id}:"]
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
                return Node(proc, base, f"127.0.0.1:{native_port}" if native_port else "")
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
def _values(handle: str, plan: SeedPlan, url: bool = True) -> list[dict[str, Any]]:
    values = [{"index": 1, "type": "URL", "data": f"https://trace.example.com/{handle}"}] if url else []
    if plan.rich or not url:
        values += [
            {"index": 2, "type": "EMAIL", "data": "quality@example.com"},
            {"index": 3, "type": "DESC", "data": f"有机绿茶 250 g, 批次 {handle[-7:]}"},
        ]
    return values


def _register(base: str, auth: dict[str, str], names: list[str], plan: SeedPlan, url: bool) -> None:
    lines = (json.dumps({"handle": h, "values": _values(h, plan, url)}, ensure_ascii=False) for h in names)
    body = ("\n".join(lines) + "\n").encode()
    status, reply = _call(base, "POST", "/api/handles", body, {**auth, "Content-Type": "application/x-ndjson"})
    if status != 201 or reply.get("created") != len(names):
        raise SystemExit(f"seeding batch failed: {status} {str(reply)[:300]}")


def seed(base: str, plan: SeedPlan, prefix: str, admin_secret: str, run_id: str) -> dict[str, Any]:
    """Promoters, enterprises (with their credentials), auditors, and ``plan.handles`` identifiers with a
    URL value (``plan.landing`` without) spread over the enterprises, in 5,000-item NDJSON batches."""
    admin = _basic(f"300:0.NA/{prefix}", admin_secret)
    salt = random.Random(run_id).randrange(10**6)  # distinct credit codes per run (a reused database)
    promoters = []
    for i in range(plan.promoters):
        body = {"name": f"Bench promoter {run_id}-{i}", "uscc": _uscc("92", salt * 100 + i)}
        promoters.append(_json(base, "POST", "/api/promoters", body, admin)["id"])
    enterprises = []
    for i in range(plan.enterprises):
        body = {
            "name": f"Bench enterprise {run_id}-{i}",
            "uscc": _uscc("91", salt * 100 + i),
            "promoter": promoters[i % len(promoters)],
        }
        e = _json(base, "POST", "/api/enterprises", body, admin)
        enterprises.append({"prefix": e["prefix"], "identity": e["admin"], "secret": e["secret"]})
    auditors = []
    for i in range(plan.auditors):
        a = _json(base, "POST", "/api/auditors", {"name": f"bench-{run_id}-{i}"}, admin)
        auditors.append({"identity": a["identity"], "secret": a["secret"]})
    handles: list[str] = []
    landing: list[str] = []
    chunk = 5000
    started = time.perf_counter()
    for i, ent in enumerate(enterprises):
        auth = _basic(ent["identity"], ent["secret"])
        for total, kind, into, url in ((plan.handles, "SKU", handles, True), (plan.landing, "PAGE", landing, False)):
            share = total // len(enterprises) + (1 if i < total % len(enterprises) else 0)
            for start in range(0, share, chunk):
                names = [f"{ent['prefix']}/{kind}-{run_id}-{n:07d}" for n in range(start, min(share, start + chunk))]
                _register(base, auth, names, plan, url)
                into += names
    seconds = time.perf_counter() - started
    random.Random(run_id).shuffle(handles)
    random.Random(run_id).shuffle(landing)
    return {
        "run_id": run_id,
        "handles": handles,
        "landing": landing,
        "enterprises": enterprises,
        "promoters": promoters,
        "auditors": auditors,
        "auditor": auditors[0],  # the mixed profile's one auditor
        "seed_seconds": round(seconds, 2),
    }


# -- Locust --------------------------------------------------------------------------------------
def run_profile(
    p: Profile, node: Node, seed_file: Path, out: Path, *, users: int, spawn_rate: float, duration: int,
    env: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """Run ``p``'s Locust file headless against ``node``; Locust's exit status and its final statistics
    (``final_stats.json``: per request type and in total)."""
    out.mkdir(parents=True, exist_ok=True)
    stats = out / "final_stats.json"
    stats.unlink(missing_ok=True)
    full_env = {
        **p.env,  # the profile's tunables; the caller's environment and ``env`` override them
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
        **(env or {}),
        "IDNODE_BENCH_SEED": str(seed_file),
        "IDNODE_BENCH_STATS": str(stats),
        "IDNODE_BENCH_NATIVE": node.native,
    }
    locust = [
        sys.executable, "-m", "locust", "-f", str(p.locustfile), "--headless", "--host", node.base,
        "-u", str(users), "-r", str(spawn_rate), "-t", f"{duration}s", "--stop-timeout", "30",
        "--csv", str(out / "locust"), "--html", str(out / "locust.html"), "--only-summary",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    result = subprocess.run(locust, cwd=ROOT, env=full_env, timeout=duration + 300)
    if not stats.exists():
        raise SystemExit(f"locust exited with {result.returncode} and wrote no statistics")
    return result.returncode, json.loads(stats.read_text())


# -- the report ----------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its descendants so far, from /proc (0 where there is none):
    the node's cost per request stays comparable when other programs share the cores."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        times[child] = (int(fields[11]) + int(fields[12])) / tick
    tree, total = {pid}, 0.0
    for child in sorted(parents):  # children have larger ids, except after wrap-around (then undercounted)
        if child in tree or parents[child] in tree:
            tree.add(child)
            total += times.get(child, 0.0)
    return total


def per_second(out: Path) -> dict[str, Any]:
    """From Locust's history (a row a second: users, total requests so far): the busiest second and,
    when the user count changed during the run (a load shape), the mean requests/s at the peak count."""
    try:
        with (out / "locust_stats_history.csv").open(newline="") as f:
            rows = [(int(r["User Count"]), int(r["Total Request Count"])) for r in csv.DictReader(f)]
    except (OSError, KeyError, ValueError):
        return {}
    steps = [(users, now - before) for (_, before), (users, now) in itertools.pairwise(rows) if users]
    if not steps:
        return {}
    busiest = max(steps, key=lambda s: s[1])
    peak = max(users for users, _ in steps)
    at_peak = [n for users, n in steps if users == peak]
    return {"busiest_second": busiest[1], "busiest_second_users": busiest[0], "peak_users": peak,
            "rps_at_peak_users": round(sum(at_peak) / len(at_peak), 1)}  # fmt: skip


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


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


def summarise(out: Path, meta: dict[str, Any], final: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """summary.json and summary.md from the final stats the Locust file wrote when Locust quit."""
    total = {**final["total"], "type": "all"}
    per_type = [{**e, "type": f"{e['method']} {e['name']}"} for e in final["per_type"]]
    verdict = "pass" if not problems else "FAIL"
    summary = {**meta, "total": total, "per_type": per_type, "errors": final["errors"], "verdict": verdict,
               "problems": problems}  # fmt: skip
    m = meta["machine"]
    node = (
        f"store {meta['store']}, Redis {meta['redis'] or 'none'}, {meta['workers']} worker(s); "
        f"{meta['handles']:,} seeded handles (+{meta['landing']:,} without a URL) under {meta['enterprises']} "
        f"enterprises (seeded in {meta['seed_seconds']} s)"
    )
    load = f"{meta['users']} users (spawn rate {meta['spawn_rate']}/s) for {meta['duration']} s"
    if meta["profile"] == "mixed":
        load += f"; Zipf s={meta['zipf_s']}, {meta['unknown_share']:.0%} unknown codes"
    seconds = per_second(out)
    summary["per_second"] = seconds
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    busiest = (
        f"; busiest second {seconds['busiest_second']:,} requests ({seconds['busiest_second_users']} users), "
        f"{seconds['rps_at_peak_users']:,} requests/s on average while all {seconds['peak_users']} users ran"
        if seconds
        else ""
    )
    lines = [
        f"# Locust run {meta['started']}: profile `{meta['profile']}`",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['os']}, Python {m['python']} "
        "(node and Locust share it)",
        f"- Node: {node}",
        f"- Load: {load}",
        f"- Machine load average (1, 5, 15 min) {meta['load_average']['before']} before, "
        f"{meta['load_average']['after']} after; node CPU {meta['node_cpu_seconds']} s, "
        f"{meta['node_cpu_ms_per_request']} ms a request",
        f"- Criterion: {meta['criterion']}",
        f"- Verdict: **{verdict}**" + "".join(f"\n  - {p}" for p in problems),
        "",
        f"**{total['rps']:,} requests/s, {total['requests']:,} requests, {total['failures']} failures**{busiest}",
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


def _profiles_help() -> str:
    rows = [
        f"  {p.name:<18} {p.summary}; documented load {p.users} users, spawn {p.spawn_rate:g}/s, {p.duration} s"
        for p in PROFILES.values()
    ]
    return (
        "profiles (--profile; each passes with 0 failed requests and requests of every expected kind):\n"
        + "\n".join(rows)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=_profiles_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--profile", default="mixed", choices=list(PROFILES), help="the load profile (default mixed)")
    ap.add_argument("--duration", type=int, help="seconds of load (default: the profile's, 60)")
    ap.add_argument("--users", type=int, help="Locust users (default: the profile's documented load)")
    ap.add_argument("--spawn-rate", type=float, help="users started per second (default: the profile's)")
    ap.add_argument("--handles", type=int, help="identifiers to seed (default: the profile's, 20,000)")
    ap.add_argument("--store", default="", help="store URL (default: embedded SQLite in a temporary directory)")
    ap.add_argument("--redis", default="", help="Redis URL for the shared cache tier (default: none)")
    ap.add_argument("--workers", type=int, default=1, help="node worker processes (default 1)")
    ap.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    ap.add_argument("--prefix", default="88.118.8", help="node prefix (default 88.118.8)")
    ap.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results"), help="report directory (a subdirectory per profile)"
    )
    args = ap.parse_args(argv)

    p = profile(args.profile)
    plan = p.seed if args.handles is None else replace(p.seed, handles=args.handles)
    users = args.users or p.users
    spawn_rate = args.spawn_rate or p.spawn_rate
    duration = args.duration or p.duration
    out = Path(args.out) / p.name
    out.mkdir(parents=True, exist_ok=True)
    run_id = secrets.token_hex(3)
    # With a reused database the node admin's secret is the one set on its first start.
    admin_secret = os.environ.get("BENCH_ADMIN_SECRET") or secrets.token_urlsafe(24)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    opts = NodeOptions(args.store, args.redis, args.workers, args.port, p.native, args.prefix)
    with tempfile.TemporaryDirectory(prefix="idnode-bench-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        node = start_node(opts, workdir, admin_secret, run_id)
        print(f"bench: node pid {node.proc.pid} on {node.base} (store: {args.store or 'embedded SQLite'})", flush=True)
        try:
            seeded = seed(node.base, plan, args.prefix, admin_secret, run_id)
            seed_file = workdir / "seed.json"  # holds credentials: stays in the temporary directory
            seed_file.write_text(json.dumps(seeded))
            count = len(seeded["handles"]) + len(seeded["landing"])
            print(f"bench: seeded {count:,} handles in {seeded['seed_seconds']} s; "
                  f"profile {p.name}: {users} users for {duration} s", flush=True)  # fmt: skip
            load_before, cpu_before = load_average(), cpu_seconds(node.proc.pid)
            code, final = run_profile(p, node, seed_file, out, users=users, spawn_rate=spawn_rate, duration=duration)
            node_cpu, load_after = cpu_seconds(node.proc.pid) - cpu_before, load_average()
        finally:
            stop_node(node.proc)
            print(f"bench: node stopped (exit {node.proc.returncode})", flush=True)
        if code not in (0, 1):  # 1: some requests failed (reported below)
            print((workdir / "node.log").read_text()[-3000:], file=sys.stderr)
            raise SystemExit(f"locust exited with {code}")
    problems = check(p, final)
    meta = {
        "profile": p.name,
        "criterion": p.criterion.replace(
            f"at {p.users} users for {p.duration} s", f"at {users} users for {duration} s"
        ),
        "started": started,
        "machine": machine(),
        "store": "PostgreSQL" if args.store.startswith("postgres") else "embedded SQLite",
        "redis": "yes" if args.redis else "",
        "workers": args.workers,
        "handles": len(seeded["handles"]),
        "landing": len(seeded["landing"]),
        "enterprises": plan.enterprises,
        "seed_seconds": seeded["seed_seconds"],
        "users": users,
        "spawn_rate": spawn_rate,
        "duration": duration,
        "zipf_s": float(os.environ.get("IDNODE_BENCH_ZIPF_S", "1.1")),
        "unknown_share": float(os.environ.get("IDNODE_BENCH_UNKNOWN", "0.05")),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "load_average": {"before": load_before, "after": load_after},
        "node_cpu_seconds": round(node_cpu, 1),
        "node_cpu_ms_per_request": round(1000 * node_cpu / max(1, final["total"]["requests"]), 2),
    }
    summarise(out, meta, final, problems)
    print((out / "summary.md").read_text())
    print(f"bench: report in {out} (locust.html, locust_stats.csv, summary.md); {meta['wall_seconds']} s in all")
    if problems:
        print(f"bench: profile {p.name} FAILED its criterion: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"bench: profile {p.name} passed: {meta['criterion']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
