"""Native Handle protocol throughput: UDP and TCP resolutions/s, as a ratio to a bare asyncio echo.

Seeds handles into a temporary SQLite store, starts the real node (``resolver.server.node_app``, so the
same resolver, cache tiers and native listeners as ``idnode serve``) in one process, and
drives it from a load generator in another process: asyncio, callback-driven, many requests in flight
(a window of UDP requests; many TCP connections, each sending its next request when a reply arrives).
Baseline, measured in the same run with the same load generator: a bare asyncio UDP (and TCP) echo
server in its own process that answers every request with a packet of the same size as the node's
real reply. Beside it the ceiling of any Python handler: a bare asyncio server answering with the
node's own replies, pre-encoded, found by the request's body bytes. The rounds alternate echo,
ceiling and node; the median of each is reported.

    .venv/bin/python -m benchmarks.native_resolve [--handles 10000] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import socket
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

SECRET = "bench-secret-for-the-native-benchmark"
PREFIX = "88.118.8"
ENVELOPE = 20
_ID = struct.Struct(">I")


def _free_port() -> int:
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def _use_uvloop() -> str:
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
        return "uvloop"
    except ImportError:
        return "asyncio"


def _handle(i: int) -> str:
    return f"{PREFIX}/SKU-{i:08d}"


# ---------------------------------------------------------------------------------------------- seeding


async def _seed(store_url: str, n: int) -> None:
    from registry import valuedata
    from registry.model import HandleValue
    from registry.stores import open_store
    from registry.stores.base import MUST_NOT_EXIST, HandleWrite

    store = await open_store(store_url)
    now = int(time.time())
    admin = HandleValue(
        100, "HS_ADMIN", valuedata.encode_admin(f"0.NA/{PREFIX}", 300, valuedata.ALL_PERMS), timestamp=now
    )
    writes = []
    for i in range(n):
        values = (
            HandleValue(1, "URL", f"https://trace.example.com/p/{i:08d}".encode(), timestamp=now),
            HandleValue(2, "EMAIL", b"quality@example.com", timestamp=now),
            admin,
        )
        writes.append(HandleWrite(_handle(i), _handle(i), PREFIX, values, MUST_NOT_EXIST))
        if len(writes) == 5000:
            await store.write(writes, now=now)
            writes = []
    if writes:
        await store.write(writes, now=now)
    await store.close()


# ---------------------------------------------------------------------------------------------- servers


async def _serve_control(conn: Connection) -> None:
    """Answer "cpu" with this process's CPU seconds (all threads) until "stop"."""
    loop = asyncio.get_running_loop()
    while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
        if command == "cpu":
            conn.send(time.process_time())


def _node_main(data_dir: str, port: int, conn: Connection) -> None:
    """The node: the real app's startup (store, registry, resolver, then the native listeners), no HTTP site."""
    os.environ["IDNODE_ADMIN_SECRET"] = SECRET
    _use_uvloop()
    from aiohttp import web

    from resolver.config import load_config
    from resolver.server import node_app

    async def main() -> None:
        # One load generator is one client address: its byte budget and connection cap are lifted so
        # every reply is sent whole (the budget is still checked per reply, so its cost is measured).
        limits = {"native_udp_budget": 1 << 40, "native_tcp_max_per_address": 4096}
        config = load_config(env={}, overrides={"data_dir": data_dir, "native_port": port, "prefix": PREFIX, **limits})
        runner = web.AppRunner(node_app(config))
        await runner.setup()
        conn.send("ready")
        await _serve_control(conn)
        await runner.cleanup()

    asyncio.run(main())


def _echo_main(port: int, reply_size: int, conn: Connection) -> None:
    """The baseline: bare asyncio UDP and TCP servers answering each request (its request id copied)
    with a packet of ``reply_size`` bytes."""
    _use_uvloop()
    pad = bytes(reply_size - ENVELOPE)
    length = struct.pack(">I", reply_size - ENVELOPE)

    class UdpEcho(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(data[:16] + length + pad, addr)

    class TcpEcho(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buf = bytearray()

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            while len(buf) >= ENVELOPE:
                size = ENVELOPE + _ID.unpack_from(buf, 16)[0]
                if len(buf) < size:
                    break
                self.transport.write(bytes(buf[:16]) + length + pad)
                del buf[:size]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", port))
        tcp = await loop.create_server(TcpEcho, "127.0.0.1", port, backlog=1024)
        conn.send("ready")
        await _serve_control(conn)
        udp.close()
        tcp.close()

    asyncio.run(main())


def _ceiling_main(port: int, replies: dict[bytes, bytes], conn: Connection) -> None:
    """The ceiling of any Python handler: bare asyncio UDP and TCP servers that answer each request
    with the node's own reply to it, pre-encoded (``replies``: request body bytes -> reply bytes
    from offset 12, its expiration as the node wrote it), behind the request's versions and ids.
    One dictionary lookup and two concatenations per request: what a handler would do if the
    lookup, the counting and the checks cost nothing."""
    _use_uvloop()
    body_at = ENVELOPE + 24  # the request body (and credential) follow the envelope and the header
    head = bytes([2, 10, 2, 10])

    class UdpCeiling(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(head + data[4:12] + replies[data[body_at:]], addr)

    class TcpCeiling(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buf = bytearray()

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            while len(buf) >= ENVELOPE:
                size = ENVELOPE + _ID.unpack_from(buf, 16)[0]
                if len(buf) < size:
                    break
                self.transport.write(head + bytes(buf[4:12]) + replies[bytes(buf[body_at:size])])
                del buf[:size]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(UdpCeiling, local_addr=("127.0.0.1", port))
        tcp = await loop.create_server(TcpCeiling, "127.0.0.1", port, backlog=1024)
        conn.send("ready")
        await _serve_control(conn)
        udp.close()
        tcp.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------- load


def _load_main(
    mode: str, port: int, templates: list[bytes], warmup: float, seconds: float, width: int, conn: Connection
) -> None:
    """Keep ``width`` requests in flight (UDP: one socket, a window; TCP: ``width`` connections, one
    request each) for ``warmup + seconds``; report replies counted during the last ``seconds``."""
    _use_uvloop()

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        state = {"measuring": False, "stopping": False, "done": 0, "total": 0, "errors": 0, "lost": 0}
        counter = iter(range(1, 1 << 31))

        def request() -> tuple[int, bytearray]:
            rid = next(counter)
            pkt = bytearray(templates[rid % len(templates)])
            _ID.pack_into(pkt, 8, rid)
            return rid, pkt

        def count(reply: bytes | bytearray) -> None:
            state["total"] += 1
            if state["measuring"]:
                state["done"] += 1
                if len(reply) >= ENVELOPE + 8 and reply[ENVELOPE + 4 : ENVELOPE + 8] not in (b"\0\0\0\1", b"\0\0\0\0"):
                    state["errors"] += 1

        if mode == "udp":

            class UdpLoad(asyncio.DatagramProtocol):
                def connection_made(self, transport: Any) -> None:
                    self.transport = transport
                    self.inflight: dict[int, float] = {}
                    for _ in range(width):
                        self.send()

                def send(self) -> None:
                    rid, pkt = request()
                    self.inflight[rid] = loop.time()
                    self.transport.sendto(pkt)

                def datagram_received(self, data: bytes, addr: Any) -> None:
                    if self.inflight.pop(_ID.unpack_from(data, 8)[0], None) is None:
                        return
                    count(data)
                    if not state["stopping"]:
                        self.send()

                def sweep(self) -> None:  # a lost datagram frees its slot after a second
                    now = loop.time()
                    for rid, sent in list(self.inflight.items()):
                        if now - sent > 1.0:
                            del self.inflight[rid]
                            state["lost"] += 1
                            if not state["stopping"]:
                                self.send()
                    if not state["stopping"]:
                        loop.call_later(0.2, self.sweep)

            transport, proto = await loop.create_datagram_endpoint(UdpLoad, remote_addr=("127.0.0.1", port))
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            loop.call_later(0.2, proto.sweep)
            closers: list[Callable[[], None]] = [transport.close]
        else:

            class TcpLoad(asyncio.Protocol):
                def connection_made(self, transport: Any) -> None:
                    self.transport = transport
                    self.buf = bytearray()
                    self.send()

                def send(self) -> None:
                    self.transport.write(request()[1])

                def data_received(self, data: bytes) -> None:
                    buf = self.buf
                    buf += data
                    while len(buf) >= ENVELOPE:
                        size = ENVELOPE + _ID.unpack_from(buf, 16)[0]
                        if len(buf) < size:
                            break
                        count(buf[:size])
                        del buf[:size]
                        if not state["stopping"]:
                            self.send()

            closers = []
            for _ in range(width):
                transport, _ = await loop.create_connection(TcpLoad, "127.0.0.1", port)
                closers.append(transport.close)
        await asyncio.sleep(warmup)
        state["measuring"] = True
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        state["measuring"] = False
        elapsed = time.perf_counter() - t0
        state["stopping"] = True
        await asyncio.sleep(0.2)
        for close in closers:
            close()
        return {
            "rate": state["done"] / elapsed,
            "total": state["total"],
            "errors": state["errors"],
            "lost": state["lost"],
        }

    conn.send(asyncio.run(main()))


def _run_load(mode: str, port: int, templates: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    width = args.window if mode == "udp" else args.connections
    p = ctx.Process(target=_load_main, args=(mode, port, templates, args.warmup, args.seconds, width, child))
    p.start()
    result = parent.recv()
    p.join()
    return result


class _Server:
    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(*args, child))

    def __enter__(self) -> _Server:
        self.process.start()
        if not self.conn.poll(60) or self.conn.recv() != "ready":
            raise RuntimeError("server did not start")
        return self

    def cpu(self) -> float:
        self.conn.send("cpu")
        return float(self.conn.recv())

    def __exit__(self, *exc: object) -> None:
        self.conn.send("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()


# ---------------------------------------------------------------------------------------------- main


def _templates(n: int, count: int) -> list[bytes]:
    from resolver.native.codec import ResolutionRequest, encode_message, make_request

    rng = random.Random(1)
    return [
        encode_message(make_request(ResolutionRequest(_handle(rng.randrange(n))), request_id=0)) for _ in range(count)
    ]


def _replies(port: int, templates: list[bytes]) -> dict[bytes, bytes]:
    """The node's reply to each request (over UDP), from offset 12, by the request's body bytes."""
    out: dict[bytes, bytes] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for template in templates:
            s.sendto(template, ("127.0.0.1", port))
            reply = s.recv(65536)
            assert reply[:4] == bytes([2, 10, 2, 10]), "the node answered another version"
            out[template[ENVELOPE + 24 :]] = reply[12:]
    return out


def _measure(server: _Server, mode: str, port: int, templates: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    """One load run; adds the server's CPU microseconds per reply."""
    before = server.cpu()
    result = _run_load(mode, port, templates, args)
    result["cpu_us"] = (server.cpu() - before) / max(1, result["total"]) * 1e6
    return result


def _line(run: dict[str, Any]) -> str:
    return f"{run['rate']:8,.0f}/s ({run['cpu_us']:4.1f} us CPU each)"


def main(args: argparse.Namespace) -> None:
    loop_name = _use_uvloop()
    runs: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {"udp": [], "tcp": []}
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_seed(f"sqlite:///{tmp}/idnode.db", args.handles))
        templates = _templates(args.handles, 2000)
        node_port, echo_port, ceiling_port = _free_port(), _free_port(), _free_port()
        with _Server(_node_main, tmp, node_port) as node_server:
            replies = _replies(node_port, templates)
            reply = replies[templates[0][ENVELOPE + 24 :]]
            reply_size, code = 12 + len(reply), _ID.unpack_from(reply, ENVELOPE - 12 + 4)[0]
            assert code == 1, f"the node answered responseCode {code}"
            with (
                _Server(_echo_main, echo_port, reply_size) as echo_server,
                _Server(_ceiling_main, ceiling_port, replies) as ceiling_server,
            ):
                print(
                    f"{args.handles:,} handles (SQLite), request {len(templates[0])} B, reply {reply_size} B; "
                    f"{loop_name}; {args.rounds} rounds of {args.seconds:g}s after {args.warmup:g}s warm-up; "
                    f"UDP window {args.window}, TCP {args.connections} connections"
                )
                for r in range(1, args.rounds + 1):
                    for mode in ("udp", "tcp"):
                        echo = _measure(echo_server, mode, echo_port, templates, args)
                        ceiling = _measure(ceiling_server, mode, ceiling_port, templates, args)
                        node = _measure(node_server, mode, node_port, templates, args)
                        runs[mode].append((echo, ceiling, node))
                        print(
                            f"  round {r} {mode.upper()}: echo {_line(echo)}   ceiling {_line(ceiling)}"
                            f"   idnode {_line(node)}   ratio {node['rate'] / echo['rate']:.2f}x"
                            f"   (errors {node['errors']}, lost {node['lost']})"
                        )
    print()
    print("server CPU per reply: user + system time of the server process over the run, divided by its replies")
    print("ceiling: a bare asyncio server sending the node's replies pre-encoded (the bound of a Python handler)")
    print("CPU ratio: echo CPU / idnode CPU, the rate ratio where the server, not the load generator, is the limit")
    print(
        f"{'':5}{'echo':>12}{'ceiling':>12}{'idnode':>12}{'ceiling/echo':>14}{'idnode/echo':>13}"
        f"   {'echo CPU':>10}{'ceiling CPU':>13}{'idnode CPU':>12}{'CPU ratio':>11}"
    )
    for mode in ("udp", "tcp"):
        rate = [statistics.median(run[i]["rate"] for run in runs[mode]) for i in range(3)]
        cpu = [statistics.median(run[i]["cpu_us"] for run in runs[mode]) for i in range(3)]
        target = "   (target >= 0.6x)" if mode == "udp" else "   (target >= 0.5x)"
        print(
            f"{mode.upper():5}{rate[0]:10,.0f}/s{rate[1]:10,.0f}/s{rate[2]:10,.0f}/s"
            f"{rate[1] / rate[0]:13.2f}x{rate[2] / rate[0]:12.2f}x"
            f"   {cpu[0]:7.1f} us{cpu[1]:10.1f} us{cpu[2]:9.1f} us{cpu[0] / cpu[2]:10.2f}x{target}"
        )
    print("(medians over the rounds)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handles", type=int, default=10_000, help="handles to seed (default 10,000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each echo then idnode (default 3)")
    parser.add_argument("--window", type=int, default=256, help="UDP requests in flight (default 256)")
    parser.add_argument("--connections", type=int, default=64, help="TCP connections (default 64)")
    main(parser.parse_args())
