"""``native``: resolution over the native Handle protocol (RFC 3652) on UDP, as HANDLE.NET clients,
the Handle System's proxies and the national top-level node's recursive resolvers ask.

``NativeClient`` is a custom Locust user (no HTTP): each has its own UDP socket to the node's native
port (``IDNODE_BENCH_NATIVE``, ``host:port``, set by run_locust.py), builds requests with
``resolver.native.codec`` (the node's own codec), joins multi-packet replies with its
``UdpReassembler``, and reports every exchange to Locust as a request (type ``UDP``) with its response
time and size. A reply whose responseCode is not the expected one (1 for seeded identifiers, 100 for
unknown ones), a malformed reply or no reply within ``IDNODE_BENCH_UDP_TIMEOUT`` seconds (default 2)
is a failure. Which identifier follows the same Zipf law as the other profiles.

One load generator is one client address: run_locust.py starts the node with
``--native-udp-budget 0`` (no per-address reply budget), as a real population of resolvers spread
over many addresses would not meet it.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import time
import uuid
from typing import Any

from locust import User, task

from benchmarks.profiles.common import ENTERPRISES, HANDLES, Zipf, think
from registry.errors import RC_HANDLE_NOT_FOUND, RC_SUCCESS
from resolver.native.codec import (
    CodecError,
    ResolutionRequest,
    ResolutionResponse,
    UdpReassembler,
    decode_payload,
    encode_message,
    make_request,
)

TIMEOUT = float(os.environ.get("IDNODE_BENCH_UDP_TIMEOUT", "2"))
_CODES = Zipf(HANDLES)
_ids = itertools.count(random.randrange(1 << 30))


def _native_address() -> tuple[str, int]:
    where = os.environ.get("IDNODE_BENCH_NATIVE", "")
    if not where:
        raise SystemExit("IDNODE_BENCH_NATIVE is not set: run the native profile with `make bench PROFILE=native`")
    host, _, port = where.rpartition(":")
    return host, int(port)


class NativeClient(User):
    wait_time = think(0.01, 0.05)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(_native_address())
        self.sock.settimeout(TIMEOUT)
        self.reassembler = UdpReassembler()

    def on_stop(self) -> None:
        self.sock.close()

    def _exchange(self, request: ResolutionRequest, name: str, code: int, check: Any = None) -> None:
        request_id = next(_ids) & 0x7FFFFFFF
        wire = encode_message(make_request(request, request_id=request_id))
        started = time.perf_counter()
        size, error = 0, None
        try:
            self.sock.send(wire)
            while True:  # skip late replies to earlier requests that timed out
                packet = self.sock.recv(65_535)
                size += len(packet)
                whole = self.reassembler.add("node", packet, time.monotonic())
                if whole is not None and whole[0].request_id == request_id:
                    break
            reply = decode_payload(*whole)
            if reply.header.response_code != code:
                error = RuntimeError(f"responseCode {reply.header.response_code}, wanted {code}")
            elif check is not None and not check(reply.body):
                error = RuntimeError("wrong values in the reply")
        except TimeoutError:
            error = TimeoutError(f"no reply within {TIMEOUT} s")
        except (CodecError, OSError) as exc:
            error = exc
        self.environment.events.request.fire(
            request_type="UDP",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=size,
            exception=error,
            context={},
        )

    @task(14)
    def resolve(self) -> None:
        self._exchange(
            ResolutionRequest(_CODES.draw(self.rng)), "resolve", RC_SUCCESS,
            lambda body: isinstance(body, ResolutionResponse) and len(body.values) >= 3,
        )  # fmt: skip

    @task(4)
    def resolve_url(self) -> None:
        self._exchange(
            ResolutionRequest(_CODES.draw(self.rng), (), ("URL",)), "resolve type=URL", RC_SUCCESS,
            lambda body: isinstance(body, ResolutionResponse) and [v.type for v in body.values] == ["URL"],
        )  # fmt: skip

    @task(1)
    def resolve_index(self) -> None:
        self._exchange(
            ResolutionRequest(_CODES.draw(self.rng), (1,)), "resolve index=1", RC_SUCCESS,
            lambda body: isinstance(body, ResolutionResponse) and [v.index for v in body.values] == [1],
        )  # fmt: skip

    @task(1)
    def resolve_unknown(self) -> None:
        prefix = self.rng.choice(ENTERPRISES)["prefix"]
        handle = f"{prefix}/UNKNOWN-{uuid.uuid4().hex[:12]}"
        self._exchange(ResolutionRequest(handle), "resolve unknown (100)", RC_HANDLE_NOT_FOUND)
