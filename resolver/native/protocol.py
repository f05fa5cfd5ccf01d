"""asyncio protocols for the native Handle protocol: UDP datagrams and TCP streams (RFC 3652 section 2.3).

Both frame messages (envelope, then the message bytes) and hand them to a shared
:class:`~resolver.native.handler.NativeHandler`, which decodes them and returns the reply bytes.
Neither ever raises out of a callback, logs above debug level, or holds an unbounded amount of
anything:

- UDP: a request spread over several datagrams is reassembled by a bounded
  :class:`~resolver.native.codec.UdpReassembler` (partial messages expire on the loop clock). A
  request the handler can answer at once (``respond_ready``: a repeated request whose reply is
  ready; ``respond_now``: a local cache hit) is answered in ``datagram_received``; for the others
  at most ``max_inflight`` tasks are answering at once (further datagrams are dropped, as a busy
  server's socket buffer would); replies over one 512-byte packet go out as numbered packets. A reply
  message over ``max_reply`` bytes, or one that would overdraw the source address's
  :class:`~resolver.native.limits.UdpBudget`, is sent as a one-datagram truncated ERROR reply
  (:func:`~resolver.native.codec.truncated_reply`): the client asks again over TCP. So a forged
  source address gets at most a few KB per request and a bounded number of bytes per second. Ready
  replies are sent against bytes drawn from that budget ahead, ``CREDIT`` at a time.
- TCP: frames are a 20-byte envelope then exactly ``length`` message bytes (at most 262,144). Several
  requests may follow each other on one connection; they are answered in order (at once, in
  ``data_received``, when nothing is queued before them and the handler can). Reading pauses while
  the answers are behind (bounded queue and buffer) or the peer is not reading its replies. A
  connection that makes no progress (no complete request, no reply written) for ``idle_timeout``
  seconds is aborted: bytes that never complete a request are no progress. An envelope announcing
  more than the limit gets a PROTOCOL_ERROR reply and the connection is closed (the stream cannot be
  resynchronised); any other malformed message gets a PROTOCOL_ERROR reply and the connection carries on.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from resolver.native.codec import (
    ENVELOPE_SIZE,
    MAX_MESSAGE,
    UDP_PACKET_SIZE,
    CodecError,
    UdpReassembler,
    decode_envelope,
    encode_envelope,
    split_udp,
    truncated_reply,
)
from resolver.native.handler import NativeHandler
from resolver.native.limits import UdpBudget, address_key
from resolver.ops.native_meter import NATIVE

__all__ = ["CREDIT", "TcpNativeProtocol", "UdpNativeProtocol"]

log = logging.getLogger("idnode.native")

_SEQ_AND_LENGTH = struct.Struct(">II")  # envelope bytes 12..20: sequence number, message length
_LENGTH = struct.Struct(">I")  # envelope bytes 16..20: message length
_ADDRESS_KEYS_MAX = 65_536  # source addresses whose budget key is remembered (cleared whole when full)
CREDIT = 4096  # UDP reply bytes drawn from an address's budget at a time for ready replies


# ---------------------------------------------------------------------------------------------- UDP


class UdpNativeProtocol(asyncio.DatagramProtocol):
    """The UDP listener. ``tasks`` holds the requests being answered."""

    def __init__(
        self,
        handler: NativeHandler,
        *,
        max_inflight: int = 4096,
        reassembler: UdpReassembler | None = None,
        reassembly_timeout: float = 10.0,
        packet_size: int = UDP_PACKET_SIZE,
        max_reply: int = MAX_MESSAGE,
        budget: UdpBudget | None = None,
    ) -> None:
        self.handler = handler
        self.max_inflight = max_inflight
        self.packet_size = packet_size
        self.max_reply = max_reply
        self.budget = budget if budget is not None else UdpBudget(0)
        self.reassembler = (
            reassembler
            if reassembler is not None
            else UdpReassembler(timeout=reassembly_timeout, max_packet=packet_size)
        )
        self._expiry_interval = max(0.5, reassembly_timeout / 2)
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self._keys: dict[Any, str] = {}  # source address -> address_key()
        # source address -> reply bytes drawn from its key's budget ahead, not sent yet (see _send)
        self._credit: dict[Any, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expiry: asyncio.TimerHandle | None = None

    # -- transport callbacks ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self._expiry = self._loop.call_later(self._expiry_interval, self._expire)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for task in list(self.tasks):
            task.cancel()
        self.transport = None

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable and the like
        log.debug("native udp: %r", exc)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        NATIVE.datagrams_in += 1
        try:
            wire = self.handler.respond_ready(data)
            if wire is not None:  # a repeated request, its reply ready: no parsing, no task
                size = len(wire)
                credit = self._credit.get(addr, 0) - size
                transport = self.transport
                if (
                    credit >= 0
                    and size <= self.packet_size
                    and size - ENVELOPE_SIZE <= self.max_reply
                    and transport is not None
                ):
                    self._credit[addr] = credit
                    try:
                        transport.sendto(wire, addr)
                    except OSError as exc:
                        log.debug("native udp: cannot reply to %s: %r", addr, exc)
                        return
                    NATIVE.datagrams_out += 1
                else:
                    self._send(wire, addr)
                return
            size = len(data)
            if size >= ENVELOPE_SIZE and _SEQ_AND_LENGTH.unpack_from(data, 12) == (0, size - ENVELOPE_SIZE):
                wire = self.handler.respond_now(data[:ENVELOPE_SIZE], data[ENVELOPE_SIZE:])
                if wire is not None:  # answered here (a cache hit): no task
                    self._send(wire, addr)
                    return
            self._received(data, addr)
        except Exception as exc:  # a datagram must never take the endpoint down
            self.handler.stats.internal += 1
            log.debug("native udp: unexpected error on a datagram from %s: %r", addr, exc)

    # -- internals ----------------------------------------------------------------------------------
    def _expire(self) -> None:
        assert self._loop is not None
        self.reassembler.expire(self._loop.time())
        self._expiry = self._loop.call_later(self._expiry_interval, self._expire)

    def _received(self, data: bytes, addr: Any) -> None:
        size = len(data)
        if size < ENVELOPE_SIZE:
            self.handler.stats.dropped += 1
            return
        loop = self._loop
        assert loop is not None
        sequence, length = _SEQ_AND_LENGTH.unpack_from(data, 12)
        if sequence == 0 and length == size - ENVELOPE_SIZE:  # the whole message in this datagram
            if len(self.tasks) >= self.max_inflight:  # (datagram_received tried to answer it at once)
                self.handler.stats.dropped += 1
                return
            envelope, payload = data[:ENVELOPE_SIZE], data[ENVELOPE_SIZE:]
        else:
            if len(self.tasks) >= self.max_inflight:
                self.handler.stats.dropped += 1
                return
            try:
                whole = self.reassembler.add(addr, data, loop.time())
            except CodecError as exc:
                log.debug("native udp: bad datagram from %s: %s", addr, exc)
                self._send(self.handler.refuse(data, str(exc)), addr)
                return
            if whole is None:
                return
            envelope, payload = encode_envelope(whole[0]), whole[1]
        task = loop.create_task(self._answer(envelope, payload, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _address_key(self, addr: Any) -> str:
        """:func:`~resolver.native.limits.address_key`, memoised per source address."""
        key = address_key(addr)
        if len(self._keys) >= _ADDRESS_KEYS_MAX:
            self._keys.clear()
        self._keys[addr] = key
        return key

    async def _answer(self, envelope: bytes, payload: bytes, addr: Any) -> None:
        try:
            wire = await self.handler.respond(envelope, payload)
        except Exception as exc:  # respond() answers every failure itself; this is the last resort
            self.handler.stats.internal += 1
            log.debug("native udp: unexpected error answering %s: %r", addr, exc)
            return
        self._send(wire, addr)

    def _send(self, wire: bytes | None, addr: Any) -> None:
        transport = self.transport
        if wire is None or transport is None or transport.is_closing():
            return
        assert self._loop is not None
        try:
            on_wire = len(wire)
            size = on_wire - ENVELOPE_SIZE
            if on_wire > self.packet_size:  # an envelope on every packet
                on_wire = size + ENVELOPE_SIZE * -(-size // (self.packet_size - ENVELOPE_SIZE))
            key = self._keys.get(addr) or self._address_key(addr)
            now = self._loop.time()
            if size > self.max_reply or not self.budget.spend(key, on_wire, now):
                why = "is too large for UDP" if size > self.max_reply else "is over this address's UDP budget"
                wire = truncated_reply(wire, f"the {size}-byte reply {why}; ask over TCP")
                self.budget.charge(key, len(wire), now)
                self.handler.stats.truncated += 1
            if len(wire) <= self.packet_size:
                transport.sendto(wire, addr)
                NATIVE.datagrams_out += 1
                if size <= self.max_reply and self._credit.get(addr, 0) < on_wire:
                    # Draw the next replies' bytes at once (datagram_received sends ready replies
                    # against them without a budget check each): what an address is sent stays
                    # within its budget, at most CREDIT bytes of it drawn early.
                    if len(self._credit) >= _ADDRESS_KEYS_MAX:
                        self._credit.clear()
                    if self.budget.spend(key, CREDIT, now):
                        self._credit[addr] = self._credit.get(addr, 0) + CREDIT
            else:
                for packet in split_udp(decode_envelope(wire), wire[ENVELOPE_SIZE:], self.packet_size):
                    transport.sendto(packet, addr)
                    NATIVE.datagrams_out += 1
        except (OSError, CodecError) as exc:
            log.debug("native udp: cannot reply to %s: %r", addr, exc)


# ---------------------------------------------------------------------------------------------- TCP


class TcpNativeProtocol(asyncio.Protocol):
    """One TCP connection. ``on_open`` (False: refuse), ``on_progress`` (a complete request arrived
    or a reply was written) and ``on_close`` let the server track its connections, most idle first."""

    def __init__(
        self,
        handler: NativeHandler,
        *,
        idle_timeout: float = 30.0,
        max_pipeline: int = 16,
        on_open: Callable[[TcpNativeProtocol], bool] | None = None,
        on_progress: Callable[[TcpNativeProtocol], None] | None = None,
        on_close: Callable[[TcpNativeProtocol], None] | None = None,
    ) -> None:
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.max_pipeline = max_pipeline
        self.max_buffer = ENVELOPE_SIZE + MAX_MESSAGE
        self._on_open = on_open
        self._on_progress = on_progress
        self._on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.address = ""  # the client it counts against (resolver.native.limits.address_key)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buf = bytearray()
        self._envelope: bytes | None = None  # read; its message bytes are still coming
        self._length = 0  # of that message
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._queued_bytes = 0
        self._worker: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._eof = False  # the peer has finished sending: answer what is complete, then close
        self._fatal = False  # a framing error: answer what is queued, send the error, then close
        self._final: bytes | None = None  # the error reply to a framing error, sent last
        self._progress = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- transport callbacks ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self.peer = transport.get_extra_info("peername")
        self.address = address_key(self.peer)
        if self._on_open is not None and not self._on_open(self):
            self.handler.stats.dropped += 1
            transport.abort()
            return
        self._progress = self._loop.time()
        self._timer = self._loop.call_at(self._progress + self.idle_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        self._buf = bytearray()
        self._queue.clear()
        self._queued_bytes = 0
        self._final = None
        self._writable.set()
        self.transport = None
        if self._on_close is not None:
            self._on_close(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if self._fatal or self._eof or transport is None:
            return
        if not self._buf and self._envelope is None and self._worker is None and not self._queue:
            # Nothing pending: one whole request answered at once (a cache hit) skips the buffer.
            size = len(data)
            if (
                size >= ENVELOPE_SIZE
                and size == ENVELOPE_SIZE + _LENGTH.unpack_from(data, 16)[0]
                and self._writable.is_set()
                and not transport.is_closing()
            ):
                try:
                    wire = self.handler.respond_ready(data) or self.handler.respond_now(
                        data[:ENVELOPE_SIZE], data[ENVELOPE_SIZE:]
                    )
                except Exception as exc:
                    self.handler.stats.internal += 1
                    log.debug("native tcp: unexpected error answering %s: %r", self.peer, exc)
                    self._abort()
                    return
                if wire is not None:
                    self._touch()
                    transport.write(wire)
                    return
        self._buf += data
        try:
            self._frame()
        except Exception as exc:
            self.handler.stats.internal += 1
            log.debug("native tcp: unexpected error framing data from %s: %r", self.peer, exc)
            self._abort()

    def eof_received(self) -> bool:
        self._eof = True
        self._frame()
        return True  # keep the transport open until the replies are written

    # -- internals ----------------------------------------------------------------------------------
    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _touch(self) -> None:
        assert self._loop is not None
        self._progress = self._loop.time()
        if self._on_progress is not None:
            self._on_progress(self)

    def _check_idle(self) -> None:
        assert self._loop is not None
        self._timer = None
        if self.transport is None:
            return
        due = self._progress + self.idle_timeout
        if self._loop.time() >= due:
            log.debug("native tcp: closing idle connection from %s", self.peer)
            self.handler.stats.idle_closed += 1
            self._abort()
            return
        self._timer = self._loop.call_at(due, self._check_idle)

    def _frame(self) -> None:
        """Take complete frames, then start the worker when there is work (or close when done)."""
        self._take_frames()
        if self._worker is None:
            if self._queue or self._final is not None:
                self._worker = asyncio.get_running_loop().create_task(self._work())
            elif (self._eof or self._fatal) and self.transport is not None:
                self.transport.close()

    def _take_frames(self) -> None:
        """Move complete frames from the buffer to the queue, as far as the queue bounds allow, then
        pause or resume reading."""
        buf = self._buf
        while not self._fatal and len(self._queue) < self.max_pipeline and self._queued_bytes < MAX_MESSAGE:
            if self._envelope is None:
                if len(buf) < ENVELOPE_SIZE:
                    break
                envelope = bytes(buf[:ENVELOPE_SIZE])
                length = _SEQ_AND_LENGTH.unpack_from(envelope, 12)[1]
                if length > MAX_MESSAGE:  # the rest of the stream cannot be framed
                    self._fail(envelope, f"envelope: message length {length} exceeds the {MAX_MESSAGE}-byte limit")
                    break
                del buf[:ENVELOPE_SIZE]
                self._envelope, self._length = envelope, length
            length = self._length
            if len(buf) < length:
                break
            envelope, payload = self._envelope, bytes(buf[:length])
            del buf[:length]
            self._envelope = None
            self._touch()
            if self._worker is None and not self._queue and self._writable.is_set():
                wire = self.handler.respond_now(envelope, payload)  # nothing before it: answer it now
                if wire is not None:
                    transport = self.transport
                    if transport is not None and not transport.is_closing():
                        transport.write(wire)
                    continue
            self._queue.append((envelope, payload))
            self._queued_bytes += length
        self._flow()

    def _flow(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        full = (
            self._fatal
            or len(self._queue) >= self.max_pipeline
            or self._queued_bytes >= MAX_MESSAGE
            or len(self._buf) >= self.max_buffer
        )
        if full and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not full and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _fail(self, envelope: bytes, reason: str) -> None:
        log.debug("native tcp: bad envelope from %s: %s", self.peer, reason)
        self._fatal = True
        self._buf = bytearray()
        self._final = self.handler.refuse(envelope, reason)

    async def _work(self) -> None:
        try:
            while self._queue:
                envelope, payload = self._queue.popleft()
                self._queued_bytes -= len(payload)
                reply = await self.handler.respond(envelope, payload)
                if reply is not None and not await self._write(reply):
                    return
                self._take_frames()
            if self._final is not None:
                final, self._final = self._final, None
                if not await self._write(final):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.handler.stats.internal += 1
            log.debug("native tcp: unexpected error answering %s: %r", self.peer, exc)
            self._worker = None
            self._abort()
            return
        self._worker = None
        if (self._eof or self._fatal) and self.transport is not None:
            self.transport.close()

    async def _write(self, wire: bytes) -> bool:
        if not self._writable.is_set():
            await self._writable.wait()
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(wire)
        self._touch()
        return True
