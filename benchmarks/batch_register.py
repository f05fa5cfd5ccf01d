"""Batch registration end to end: identifiers/s through ``POST /api/handles``, as a ratio to inserting
the same rows straight into the same kind of store from a plain script, in the same run.

For each store kind (SQLite in a temporary directory; PostgreSQL in a fresh database created here and
dropped at the end) this starts a real ``idnode serve`` subprocess, onboards an enterprise, and posts
``--items`` identifiers (default 200,000) in batches of ``--batch`` (default 100,000) as NDJSON from
this process with aiohttp, each identifier with a URL value and one more value. It reports the
end-to-end rate, the server's peak memory growth while it takes the first batch (VmHWM after minus
VmRSS before, from /proc/<pid>/status, with the peak reset just before the batch), and the baseline:

- SQLite: ``sqlite3`` ``executemany`` of the same rows (the packed records the store would hold) into
  a table with the columns and indexes of ``handles`` in ``registry/stores/sqlite.py``, one
  transaction, same pragmas (WAL, synchronous=NORMAL).
- PostgreSQL: asyncpg ``copy_records_to_table`` into a table shaped like the store's ``handles``
  (same columns, primary key and unique index), in the same database.

    .venv/bin/python -m benchmarks.batch_register [--store-kind sqlite|postgresql|both]
        [--pg-admin postgresql://postgres@127.0.0.1:5432/postgres] [--items 200000] [--batch 100000]
        [--profile DIR]   # run the server under cProfile and print where its time went
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import pstats
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

SECRET = "bench-secret-for-the-batch-benchmark"
NODE_PREFIX = "88.118.8"
TARGET_RATE = 100_000
TARGET_RATIO = 0.3
TARGET_GROWTH_MB = 150
ROOT = Path(__file__).resolve().parent.parent


# -- the rows ----------------------------------------------------------------------------------------
def _item(prefix: str, n: int) -> dict[str, Any]:
    return {
        "handle": f"{prefix}/SKU-2025-{n:07d}",
        "values": [
            {"index": 1, "type": "URL", "data": f"https://trace.example.com/p/{n:07d}"},
            {"index": 2, "type": "EMAIL", "data": f"quality-{n % 97}@factory.example.com"},
        ],
    }


def ndjson_batches(prefix: str, items: int, batch: int) -> list[bytes]:
    out = []
    for start in range(0, items, batch):
        lines = (json.dumps(_item(prefix, n), separators=(",", ":")) for n in range(start, min(items, start + batch)))
        out.append(("\n".join(lines) + "\n").encode())
    return out


def baseline_rows(prefix: str, items: int, enterprise_id: int) -> list[tuple[Any, ...]]:
    """(key, handle, prefix, enterprise id, packed record) per identifier, as the store writes them."""
    from registry.model import HandleValue, Record, parse_handle
    from registry.packing import pack_record
    from registry.service import DEFAULT_HANDLE_ADMIN_PERMS
    from registry.valuedata import encode_admin

    now = int(time.time())
    admin = HandleValue(100, "HS_ADMIN", encode_admin(f"0.NA/{prefix}", 300, DEFAULT_HANDLE_ADMIN_PERMS), timestamp=now)
    rows = []
    norm = prefix.upper()
    for n in range(items):
        item = _item(prefix, n)
        given = [HandleValue(v["index"], v["type"], v["data"].encode(), timestamp=now) for v in item["values"]]
        values = (*given, admin)
        packed = pack_record(Record(handle=item["handle"], values=values, version=1))
        rows.append((parse_handle(item["handle"]).key, item["handle"], norm, enterprise_id, packed))
    return rows


def sqlite_baseline(path: str, rows: list[tuple[Any, ...]]) -> float:
    """Seconds to insert ``rows`` into a fresh table made like the SQLite store's ``handles``."""
    from registry.stores.sqlite import HANDLES_DDL

    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(HANDLES_DDL.format(table="handles"))
    now = int(time.time())
    params = [(i + 1, key, prefix, eid, now, now, 1, packed) for i, (key, _, prefix, eid, packed) in enumerate(rows)]
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO handles (id, hkey, prefix, enterprise_id, created_at, updated_at, version, record) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params,
    )
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


async def postgres_baseline(url: str, rows: list[tuple[Any, ...]]) -> float:
    """Seconds to COPY ``rows`` into a table made like the PostgreSQL store's ``handles``."""
    import asyncpg

    from registry.days import day_number
    from registry.stores.postgres import HANDLES_DDL
    from registry.stores.postgres_handle_writes import HANDLES_COPY_COLUMNS

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS baseline_handles;" + HANDLES_DDL.format(table="baseline_handles"))
        now = int(time.time())
        day = day_number(now)
        records = [
            (prefix, i + 1, key, handle, eid, now, day, now, 1, packed)
            for i, (key, handle, prefix, eid, packed) in enumerate(rows)
        ]
        start = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table("baseline_handles", records=records, columns=HANDLES_COPY_COLUMNS)
        return time.perf_counter() - start
    finally:
        await conn.close()


# -- the server ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/<pid>/clear_refs``)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _basic(identity: str, secret: str) -> dict[str, str]:
    from urllib.parse import quote

    token = base64.b64encode(f"{quote(identity, safe='')}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Server:
    store_url: str
    data_dir: str
    batch: int
    profile: str | None = None
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        idnode = str(Path(sys.executable).parent / "idnode")
        args = [
            "serve",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--data-dir", self.data_dir,
            "--store", self.store_url,
            "--native-port", "0",
            "--workers", "1",
            "--log-level", "warning",
            "--batch-max-items", str(max(self.batch, 100_000)),
        ]  # fmt: skip
        cmd = [sys.executable, "-m", "cProfile", "-o", self.profile, idnode, *args] if self.profile else [idnode, *args]
        env = {**os.environ, "IDNODE_ADMIN_SECRET": SECRET}
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"idnode serve exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
                try:
                    async with session.get(f"{self.base}/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("idnode serve did not become ready in 60 s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Result:
    kind: str
    items: int
    seconds: float
    baseline_seconds: float
    batch_seconds: list[float]
    rss_before_kb: int
    peak_kb: int
    peak_reset: bool
    cpu_seconds: float = 0.0  # the server process's CPU time over the batches (not PostgreSQL's)
    first_cpu_seconds: float = 0.0  # the same over batch 1 (the value indexer has nothing queued yet)

    @property
    def rate(self) -> float:
        return self.items / self.seconds

    @property
    def baseline_rate(self) -> float:
        return self.items / self.baseline_seconds

    @property
    def growth_mb(self) -> float:
        return (self.peak_kb - self.rss_before_kb) / 1024


async def _onboard(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    from registry.uscc import uscc_check_char

    def uscc(kind: str) -> str:
        body = f"{kind}440111{uuid.uuid4().int % 10**9:09d}"[:17]
        return body + uscc_check_char(body)

    admin = _basic(f"300:0.NA/{NODE_PREFIX}", SECRET)
    async with session.post(
        f"{base}/api/promoters", json={"name": "Bench promoter", "uscc": uscc("92")}, headers=admin
    ) as r:
        assert r.status == 201, await r.text()
        promoter = (await r.json())["id"]
    body = {"name": "Bench enterprise", "uscc": uscc("91"), "promoter": promoter}
    async with session.post(f"{base}/api/enterprises", json=body, headers=admin) as r:
        assert r.status == 201, await r.text()
        return await r.json()


async def run_kind(kind: str, store_url: str, tmp: str, args: argparse.Namespace, baseline: Any) -> Result:
    profile = str(Path(args.profile) / f"server-{kind}.prof") if args.profile else None
    server = Server(store_url, tmp, args.batch, profile)
    await server.start()
    try:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            ent = await _onboard(session, server.base)
            prefix = ent["prefix"]
            print(f"[{kind}] encoding {args.items:,} identifiers as NDJSON …", flush=True)
            bodies = ndjson_batches(prefix, args.items, args.batch)
            headers = {**_basic(ent["admin"], ent["secret"]), "Content-Type": "application/x-ndjson"}
            # Warm-up: one small batch (authentication, template and prefix caches, connections).
            warm = ("\n".join(json.dumps(_item(prefix, args.items + n)) for n in range(10))).encode()
            async with session.post(f"{server.base}/api/handles", data=warm, headers=headers) as r:
                assert r.status == 201, await r.text()
            assert server.proc is not None
            pid = server.proc.pid
            before = _status(pid)
            reset = _reset_peak(pid)
            peak = 0
            times = []
            cpu_start = _cpu_seconds(pid)
            first_cpu = 0.0
            start = time.perf_counter()
            for n, body in enumerate(bodies):
                t0 = time.perf_counter()
                async with session.post(f"{server.base}/api/handles", data=body, headers=headers) as r:
                    reply = await r.json()
                    assert r.status == 201 and reply["failed"] == 0, reply
                times.append(time.perf_counter() - t0)
                if n == 0:
                    peak = _status(pid)["VmHWM"]
                    first_cpu = _cpu_seconds(pid) - cpu_start
                print(f"[{kind}] batch {n + 1}: {reply['created']:,} created in {times[-1]:.2f} s", flush=True)
            elapsed = time.perf_counter() - start
            cpu = _cpu_seconds(pid) - cpu_start
            async with session.get(f"{server.base}/api/handles/{prefix}/SKU-2025-{args.items - 1:07d}") as r:
                assert r.status == 200, await r.text()
        # The server is stopped before the baseline runs: its value indexer (registry.value_index)
        # goes on indexing the new handles in the background and would slow the baseline down.
        server.stop()
        rows = baseline_rows(prefix, args.items, ent["id"])
        # The plain script at its best: no cyclic GC during the insert, the best of three fresh tables.
        gc.collect()
        gc.disable()
        try:
            base_seconds = min([await baseline(rows) for _ in range(3)])
        finally:
            gc.enable()
    finally:
        server.stop()
    if profile:
        print(f"\n[{kind}] server profile (cumulative, top 35): {profile}")
        pstats.Stats(profile).sort_stats("cumulative").print_stats(35)
        print(f"[{kind}] server profile (own time, top 25)")
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    return Result(kind, args.items, elapsed, base_seconds, times, before["VmRSS"], peak, reset, cpu, first_cpu)


async def bench_sqlite(args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix="idnode-bench-") as tmp:
        store = f"sqlite:///{tmp}/idnode.db"

        async def baseline(rows: list[tuple[Any, ...]]) -> float:
            return await asyncio.to_thread(sqlite_baseline, f"{tmp}/baseline.db", rows)

        return await run_kind("sqlite", store, tmp, args, baseline)


async def bench_postgresql(args: argparse.Namespace) -> Result:
    import asyncpg

    name = f"idnode_bench_{uuid.uuid4().hex[:10]}"
    base, _, _ = args.pg_admin.rpartition("/")
    url = f"{base}/{name}"
    admin = await asyncpg.connect(args.pg_admin)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        with tempfile.TemporaryDirectory(prefix="idnode-bench-") as tmp:

            async def baseline(rows: list[tuple[Any, ...]]) -> float:
                return await postgres_baseline(url, rows)

            return await run_kind("postgresql", url, tmp, args, baseline)
    finally:
        admin = await asyncpg.connect(args.pg_admin)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def report(results: list[Result]) -> None:
    print()
    print(f"{'store':<11} {'identifiers':>11} {'end to end':>14} {'baseline':>14} {'ratio':>7} "
          f"{'>=100k/s':>9} {'>=0.3x':>7} {'peak growth (1st batch)':>24}")  # fmt: skip
    for r in results:
        growth = f"{r.growth_mb:,.0f} MB" + ("" if r.peak_reset else " (peak not reset)")
        print(
            f"{r.kind:<11} {r.items:>11,} {r.rate:>10,.0f} id/s {r.baseline_rate:>10,.0f} id/s "
            f"{r.rate / r.baseline_rate:>6.2f}x {'yes' if r.rate >= TARGET_RATE else 'NO':>9} "
            f"{'yes' if r.rate / r.baseline_rate >= TARGET_RATIO else 'NO':>7} "
            f"{growth:>19} {'ok' if r.growth_mb < TARGET_GROWTH_MB else 'OVER'}"
        )
        batches = ", ".join(f"{t:.2f} s" for t in r.batch_seconds)
        print(
            f"{'':<11} batches: {batches}; baseline insert {r.baseline_seconds:.2f} s; "
            f"server RSS before {r.rss_before_kb / 1024:,.0f} MB; server CPU {r.cpu_seconds:.2f} s "
            f"({r.cpu_seconds / r.items * 1e6:.1f} us per identifier, all threads; batch 1 alone "
            f"{r.first_cpu_seconds / (r.items / len(r.batch_seconds)) * 1e6:.1f} us)"
        )


async def amain(args: argparse.Namespace) -> None:
    results = []
    if args.store_kind in ("sqlite", "both"):
        results.append(await bench_sqlite(args))
    if args.store_kind in ("postgresql", "both"):
        results.append(await bench_postgresql(args))
    report(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store-kind", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--pg-admin", default=os.environ.get("IDNODE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--profile", metavar="DIR", help="Run the server under cProfile, keep the profile in DIR.")
    args = parser.parse_args()
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
