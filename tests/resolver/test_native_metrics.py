"""Native protocol metrics on /metrics: requests by opcode and responseCode, latency, UDP datagrams in
and out, open TCP connections, connections refused at the caps — on one node in this process (scrapes
compared before and after, the registry being shared with the rest of the run) and summed over
``idnode serve --workers 2``, whose workers each serve the native port."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Histogram

from registry.errors import (
    RC_HANDLE_NOT_FOUND,
    RC_OPERATION_NOT_SUPPORTED,
    RC_PROTOCOL_ERROR,
    RC_SUCCESS,
    RC_VALUES_NOT_FOUND,
)
from resolver.config import Config, load_config
from resolver.http.keys import STATE_KEY
from resolver.native.codec import (
    ENVELOPE_SIZE,
    GetSiteInfoRequest,
    Message,
    RawBody,
    UdpReassembler,
    decode_envelope,
    decode_payload,
    encode_message,
    make_request,
)
from resolver.native.server import NativeServer, start_native
from resolver.ops import metrics
from resolver.ops.native_meter import NativeMeter
from resolver.server import node_app
from tests.conftest import ADMIN_SECRET, free_port
from tests.resolver.conftest import NODE_PREFIX
from tests.resolver.native_client import free_native_port, resolution
from tests.resolver.test_metrics import Samples, _counts_by_pid, delta, parse, scrape, val

NODE_HANDLE = f"0.NA/{NODE_PREFIX}"
REQUESTS = "idnode_native_requests_total"
LATENCY = "idnode_native_request_duration_seconds"


@pytest.fixture
async def node(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestClient, Config]]:
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    overrides = {"data_dir": str(tmp_path), "store": f"sqlite:///{tmp_path}/idnode.db"}
    config = load_config(env={}, overrides={**overrides, "native_port": free_native_port()})
    async with TestClient(TestServer(node_app(config))) as client:
        yield client, config


async def _udp(port: int, request: Message | bytes, source: socket.socket | None = None) -> Message:
    loop = asyncio.get_running_loop()
    sock = source or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        await loop.sock_sendto(
            sock, request if isinstance(request, bytes) else encode_message(request), ("127.0.0.1", port)
        )
        packets = UdpReassembler()
        while True:
            whole = packets.add("node", await asyncio.wait_for(loop.sock_recv(sock, 65_536), 5), 0.0)
            if whole is not None:
                return decode_payload(*whole)
    finally:
        if source is None:
            sock.close()


async def _read_frame(reader: asyncio.StreamReader) -> Message:
    envelope = decode_envelope(await asyncio.wait_for(reader.readexactly(ENVELOPE_SIZE), 5))
    return decode_payload(envelope, await asyncio.wait_for(reader.readexactly(envelope.length), 5))


async def _eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_requests_latency_and_datagrams_are_counted(node: tuple[TestClient, Config]) -> None:
    client, config = node
    port = config.native_port
    before = await scrape(client)
    udp = [
        (resolution(NODE_HANDLE), "1", RC_SUCCESS),
        (resolution(NODE_PREFIX), "1", RC_SUCCESS),
        (resolution(f"{NODE_PREFIX}/no-such-1"), "1", RC_HANDLE_NOT_FOUND),
        (resolution(f"{NODE_PREFIX}/no-such-2"), "1", RC_HANDLE_NOT_FOUND),
        (resolution(NODE_HANDLE, types=("NOPE",)), "1", RC_VALUES_NOT_FOUND),
        (make_request(GetSiteInfoRequest(), request_id=2), "2", RC_SUCCESS),
        (make_request(RawBody(b"\0\0\0\0"), request_id=3, opcode=100), "100", RC_OPERATION_NOT_SUPPORTED),
        (make_request(RawBody(b"\0\0\0\0"), request_id=4, opcode=77_777), "other", RC_OPERATION_NOT_SUPPORTED),
        (make_request(RawBody(), request_id=5, opcode=0), "0", RC_PROTOCOL_ERROR),
    ]
    for request, _, code in udp:
        assert (await _udp(port, request)).header.response_code == code
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request_id in (6, 7):
            writer.write(encode_message(resolution(NODE_HANDLE, request_id=request_id)))
            assert (await _read_frame(reader)).envelope.request_id == request_id
    finally:
        writer.close()
    after = await scrape(client)

    expected: dict[tuple[str, str], int] = {("1", str(RC_SUCCESS)): 2}  # the two over TCP
    for _, opcode, code in udp:
        expected[opcode, str(code)] = expected.get((opcode, str(code)), 0) + 1
    for (opcode, code), count in expected.items():
        assert delta(before, after, REQUESTS, opcode=opcode, code=code) == count, (opcode, code)
    assert (
        sum(v for (name, _), v in after.items() if name == REQUESTS)
        - sum(v for (name, _), v in before.items() if name == REQUESTS)
        == len(udp) + 2
    )  # nothing else was counted
    resolutions = sum(count for (opcode, _), count in expected.items() if opcode == "1")
    assert delta(before, after, f"{LATENCY}_count", opcode="1") == resolutions
    assert delta(before, after, f"{LATENCY}_bucket", opcode="1", le="+Inf") == resolutions
    assert delta(before, after, f"{LATENCY}_sum", opcode="1") > 0
    buckets = _buckets(after, "1")
    assert buckets == sorted(buckets)  # cumulative
    assert delta(before, after, "idnode_native_udp_datagrams_total", direction="in") == len(udp)
    assert delta(before, after, "idnode_native_udp_datagrams_total", direction="out") == len(udp)  # one each


async def test_replies_sent_at_once_are_counted_as_cache_hits(node: tuple[TestClient, Config]) -> None:
    """Resolutions answered from the local cache tier in the receive callback are counted in bulk: as
    requests, in the latency histogram and as local-tier hits (and cached "no such handle")."""
    client, config = node
    port = config.native_port
    missing = f"{NODE_PREFIX}/no-such-cached"
    for handle in (NODE_HANDLE, missing):  # in the local tier from now on
        await _udp(port, resolution(handle))
    before = await scrape(client)
    for _ in range(3):
        assert (await _udp(port, resolution(NODE_HANDLE))).header.response_code == RC_SUCCESS
    for _ in range(2):
        assert (await _udp(port, resolution(missing))).header.response_code == RC_HANDLE_NOT_FOUND
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode_message(resolution(NODE_HANDLE, request_id=9)))
        assert (await _read_frame(reader)).header.response_code == RC_SUCCESS
    finally:
        writer.close()
    after = await scrape(client)
    assert delta(before, after, "idnode_cache_requests_total", tier="local", result="hit") == 4
    assert delta(before, after, "idnode_cache_requests_total", tier="local", result="negative") == 2
    assert delta(before, after, "idnode_cache_requests_total", tier="local", result="miss") == 0
    assert delta(before, after, REQUESTS, opcode="1", code=str(RC_SUCCESS)) == 4
    assert delta(before, after, REQUESTS, opcode="1", code=str(RC_HANDLE_NOT_FOUND)) == 2
    assert delta(before, after, f"{LATENCY}_count", opcode="1") == 6


def _buckets(samples: Samples, opcode: str) -> list[float]:
    found = [
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == f"{LATENCY}_bucket" and dict(labels).get("opcode") == opcode
    ]
    return [value for _, value in sorted(found)]


async def test_open_and_refused_tcp_connections(node: tuple[TestClient, Config]) -> None:
    client, config = node
    state = client.server.app[STATE_KEY]
    assert state.native is not None
    listening = NativeServer.on_port(config.native_port)
    assert listening is not None
    before = await scrape(client)
    opened = [await asyncio.open_connection("127.0.0.1", config.native_port) for _ in range(3)]
    await _eventually(lambda: len(listening.connections) == 3)
    during = await scrape(client)
    assert delta(before, during, "idnode_native_tcp_connections") == 3
    for _, writer in opened:
        writer.close()
    await _eventually(lambda: not listening.connections)
    assert delta(before, await scrape(client), "idnode_native_tcp_connections") == 0

    # A second listener capped at one connection: each newcomer closes the one before it.
    capped = await start_native(state.native, config, port=0, max_connections=1)
    port = capped.tcp_addresses[0][1]
    try:
        writers = []
        for request_id in (1, 2, 3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            writer.write(encode_message(resolution(NODE_HANDLE, request_id=request_id)))
            assert (await _read_frame(reader)).envelope.request_id == request_id
        after = await scrape(client)
        assert delta(before, after, "idnode_native_tcp_connections_refused_total", reason="cap") == 2
        assert delta(before, after, "idnode_native_tcp_connections") == 1
        for writer in writers:
            writer.close()
    finally:
        await capped.close()
    assert delta(before, await scrape(client), "idnode_native_tcp_connections") == 0


def test_a_flush_adds_what_observe_would_have() -> None:
    """The meter adds its counts to the histogram's buckets directly (prometheus-client has no bulk
    observe): the series it leaves are the ones observe() leaves for the same latencies."""
    latencies = [0.00004, 0.0002, 0.0002, 0.0031, 0.04, 0.7, 12.0, 100.0, 0.005]
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "reference_seconds", "same buckets", registry=reference_registry, buckets=metrics.NATIVE_LATENCY._upper_bounds
    )
    for seconds in latencies:
        reference.observe(seconds)
    meter = NativeMeter()
    before = _histogram_samples("1002")
    for seconds in latencies:
        meter.answered(1002, RC_OPERATION_NOT_SUPPORTED, seconds)
    meter.answered(1 << 31, RC_OPERATION_NOT_SUPPORTED, 0.001)  # not an opcode HANDLE.NET knows: "other"
    meter.flush()
    after = _histogram_samples("1002")
    expected = {
        s.labels.get("le", s.name.rsplit("_", 1)[-1]): s.value
        for family in reference_registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }
    got = {key: after[key] - before.get(key, 0.0) for key in after}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    requests = metrics.NATIVE_REQUESTS.labels("1002", str(RC_OPERATION_NOT_SUPPORTED))._value.get()
    assert requests >= len(latencies)
    assert metrics.NATIVE_REQUESTS.labels("other", str(RC_OPERATION_NOT_SUPPORTED))._value.get() >= 1
    assert not meter._requests and not meter._latency  # flushed


def test_the_fast_paths_resolutions_and_the_general_paths_add_up() -> None:
    """The fast path counts resolutions apart (no label to work out); a flush adds them to opcode 1's."""
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        sample(REQUESTS, opcode="1", code="1"),
        sample(REQUESTS, opcode="1", code="100"),
        sample(f"{LATENCY}_count", opcode="1"),
        sample(f"{LATENCY}_bucket", opcode="1", le="0.00025"),
    )
    meter = NativeMeter()
    meter.resolution(RC_SUCCESS, 0.0002)
    meter.resolution(RC_SUCCESS, 0.0002)
    meter.resolution(RC_HANDLE_NOT_FOUND, 0.003)
    meter.answered(1, RC_SUCCESS, 0.0001)  # the general path's resolution
    meter.flush()
    after = (
        sample(REQUESTS, opcode="1", code="1"),
        sample(REQUESTS, opcode="1", code="100"),
        sample(f"{LATENCY}_count", opcode="1"),
        sample(f"{LATENCY}_bucket", opcode="1", le="0.00025"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 1, 4, 3]
    meter.flush()  # nothing new: nothing added
    assert sample(f"{LATENCY}_count", opcode="1") == after[2]


def test_ready_replies_are_counted_as_resolutions_hits_and_latencies() -> None:
    """Ready replies count as successful resolutions and local-tier hits, with their latencies: through
    ``ready``, or inline by the handler (first bucket, timer set); a flush adds up both."""
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    meter = NativeMeter()
    first = meter.first_bound
    le = str(first)

    def samples() -> tuple[float, ...]:
        return (
            sample(REQUESTS, opcode="1", code="1"),
            sample(f"{LATENCY}_count", opcode="1"),
            sample(f"{LATENCY}_bucket", opcode="1", le=le),
            sample(f"{LATENCY}_sum", opcode="1"),
            sample("idnode_cache_requests_total", tier="local", result="hit"),
        )

    before = samples()
    meter.ready(first / 2)
    meter.ready_replies += 1  # as NativeHandler.respond_ready counts inline
    meter.ready_first += 1
    meter.ready_seconds += first / 4
    meter.ready(1.0)  # beyond the first bucket
    meter.flush()
    after = samples()
    assert [a - b for a, b in zip(after[:3], before[:3], strict=True)] == [3, 3, 2]
    assert after[3] - before[3] == pytest.approx(1.0 + first * 0.75)
    assert after[4] - before[4] == 3
    meter.flush()
    assert samples() == after


def _histogram_samples(opcode: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metrics.NATIVE_LATENCY.collect():
        for s in family.samples:
            if s.labels.get("opcode") == opcode and not s.name.endswith("_created"):
                out[s.labels.get("le", s.name.rsplit("_", 1)[-1])] = s.value
    return out


# == several worker processes =====================================================================


def _native_counts_by_pid(prom_dir: Path) -> dict[str, float]:
    """Per worker (pid), its idnode_native_requests_total, read from the multiprocess files."""
    from prometheus_client.mmap_dict import MmapedDict

    out: dict[str, float] = {}
    for path in glob.glob(str(prom_dir / "counter_*.db")):
        pid = Path(path).stem.split("_", 1)[1]
        for key, value, _, _ in MmapedDict.read_all_values_from_file(path):
            if json.loads(key)[1] == REQUESTS:
                out[pid] = out.get(pid, 0.0) + value
    return out


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """``idnode serve --workers 2`` with the native port: (base URL, native port, metrics dir)."""
    port, native_port = free_port(), free_native_port()
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDNODE_", "PROMETHEUS_"))}
    env.update(IDNODE_ADMIN_SECRET=ADMIN_SECRET, PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    cmd = [
        sys.executable, "-c", "from resolver.cli import main; main()",
        "serve", "--workers", "2", "--port", str(port), "--native-port", str(native_port),
        "--native-udp-budget", "0", "--data-dir", str(tmp_path / "data"), "--log-level", "warning",
    ]  # fmt: skip
    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", native_port, prom_dir
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(45)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


async def test_every_worker_serves_native_and_the_scrape_sums_them(two_workers: tuple[str, int, Path]) -> None:
    base, native_port, prom_dir = two_workers
    deadline = time.monotonic() + 60
    # A new connection per request, so SO_REUSEPORT spreads them over the workers: once both have
    # answered over HTTP, both have bound the native port (resolver.server binds it first).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        while len(_counts_by_pid(prom_dir, "/healthz", "GET", None)) < 2:
            try:
                async with http.get(f"{base}/healthz") as r:
                    await r.read()
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
            assert time.monotonic() < deadline, "the two workers did not both come up"
        # Each request from a socket of its own: SO_REUSEPORT spreads the source ports over the workers.
        n = 64
        for i in range(n):
            reply = await _udp(native_port, resolution(f"{NODE_PREFIX}/no-such-{i}", request_id=i))
            assert reply.header.response_code == RC_HANDLE_NOT_FOUND and reply.envelope.request_id == i
        # Each worker flushes its counts within a second of counting them; a scrape sums the workers.
        while True:
            async with http.get(f"{base}/metrics") as r:
                samples = parse(await r.text())
            if val(samples, REQUESTS, opcode="1", code=str(RC_HANDLE_NOT_FOUND)) >= n:
                break
            assert time.monotonic() < deadline, "the workers' counts did not reach the scrape"
            await asyncio.sleep(0.2)
        assert val(samples, REQUESTS, opcode="1", code=str(RC_HANDLE_NOT_FOUND)) == n
        assert val(samples, f"{LATENCY}_count", opcode="1") == n
        assert val(samples, "idnode_native_udp_datagrams_total", direction="in") >= n
        per_worker = _native_counts_by_pid(prom_dir)
        assert len([c for c in per_worker.values() if c > 0]) == 2, per_worker  # both workers answered some
