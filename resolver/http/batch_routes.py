"""``POST /api/handles``: batch registration from NDJSON, a JSON array or a msgpack array.

The body is parsed as a stream: items are validated as they arrive and only the validated items
are kept, never a second copy of the raw batch. NDJSON is decoded a block of lines at a time by
msgspec into the common item shape (:mod:`registry.batch_items`); a block with any other line is
decoded line by line, and a line msgspec refuses goes through ``json`` as before.

A batch that only creates is written while it is read (:class:`registry.batch.BatchValidator`
with ``atomic`` given): the store's transaction is open while the body is parsed. It must not stay
open while the node waits for a slow client, so whenever the next piece of the body takes longer
than :data:`STALL` seconds to arrive, the validator suspends the stream (rolled back, written whole
at the end).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import msgspec
from aiohttp import web

from registry.auth import Caller
from registry.batch import BatchValidator, gc_paused
from registry.batch_items import ITEM_DECODER, Item
from registry.errors import RC_SUCCESS, InvalidRequest
from registry.inputs import UNPAIRED_SURROGATE, has_unpaired_surrogate, json_problem
from resolver.http.bodies import BodyDecoder, body_coding
from resolver.http.keys import CONFIG_KEY, STATE_KEY, registry_of
from resolver.http.statuses import http_status
from resolver.http.web import error_response, flag, request_caller
from resolver.ops.metrics import BATCH_ITEMS, BATCH_RESULTS

__all__ = ["batch_routes"]

batch_routes = web.RouteTableDef()
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/ndjson")
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
CHUNK = 256 * 1024
YIELD_EVERY = 256  # items parsed between two turns of the event loop (the store's I/O meanwhile)
STALL = 0.25  # seconds the body may keep the node waiting while a store transaction is open


class BodyTooLarge(InvalidRequest):
    pass


class _Body:
    """Reads the request body in chunks, decoding any gzip/deflate Content-Encoding, hashing the
    decoded bytes and enforcing the size limit on what is sent and on what it decodes to."""

    def __init__(self, request: web.Request, limit: int, validator: BatchValidator | None = None) -> None:
        self.request = request
        self.limit = limit
        self.size = 0
        self.sha = hashlib.sha256()
        coding = body_coding(request)
        self.decoder = BodyDecoder(coding) if coding is not None else None
        self.writer = validator.writer if validator is not None else None

    async def _read(self) -> bytes:
        """The next piece of the body (b"" at its end). While a store transaction is open, a piece
        that keeps us waiting longer than STALL has the transaction rolled back first."""
        content = self.request.content
        writer = self.writer
        if writer is None or not writer.holding:
            return await content.read(CHUNK)
        task = asyncio.ensure_future(content.read(CHUNK))
        try:
            done, _ = await asyncio.wait((task,), timeout=STALL)
            if not done:
                await writer.suspend()
            return await task
        finally:
            task.cancel()

    def _count(self, data: bytes) -> bytes:
        self.size += len(data)
        if self.size > self.limit:
            raise BodyTooLarge(f"batch body larger than {self.limit} bytes")
        self.sha.update(data)
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        sent = 0
        while chunk := await self._read():
            if self.decoder is None:
                yield self._count(chunk)
                continue
            sent += len(chunk)
            if sent > self.limit:
                raise BodyTooLarge(f"batch body larger than {self.limit} bytes")
            for piece in self.decoder.feed(chunk):
                yield self._count(piece)
        if self.decoder is not None:
            self.decoder.close()


class _LineError(Exception):
    """An item that could not be decoded: it fails at its position, the rest of the batch goes on."""

    def __init__(self, message: str) -> None:
        self.message = message


def _int_or_marker(digits: str) -> int | None:
    """json's ``parse_int`` for re-reading an item ``int()`` refused: the item is failed anyway."""
    return int(digits) if len(digits) <= 4000 else None


async def _ndjson(body: _Body, line_limit: int) -> AsyncIterator[Any]:
    """One JSON value per line; a line that is not JSON yields a _LineError in its place."""
    async for block in _ndjson_blocks(body, line_limit, typed=False):
        for obj in block:
            yield obj


async def _ndjson_blocks(body: _Body, line_limit: int, *, typed: bool = True) -> AsyncIterator[list[Any]]:
    """The items of the lines that arrived, a list per piece of the body. ``typed``: items of the
    common shape come as :class:`registry.batch_items.Item` (decoded by msgspec), the others as
    ``json`` decodes them; a line that is not JSON is a _LineError."""
    raw_decode = json.JSONDecoder().raw_decode
    decode_item = ITEM_DECODER.decode  # one value per call: the whole line, or it refuses
    buf = b""
    line_no = 0

    def decode(line: bytes) -> Any:
        if typed:
            try:
                return ITEM_DECODER.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass  # not the common shape, or not JSON: json decides and words the refusal
        # raw_decode on text: json.loads(bytes) costs a third more per line (encoding detection).
        try:
            text = line.decode("utf-8")
            obj, end = raw_decode(text)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError too
            return _LineError(f"line {line_no} is not JSON: {json_problem(exc)}"[:300])
        if end != len(text):
            return _LineError(f"line {line_no} is not JSON: extra data after the value (column {end + 1})")
        if has_unpaired_surrogate(text, obj):
            return _LineError(f"line {line_no}: {UNPAIRED_SURROGATE}")
        return obj

    def lines(block: bytes, last: bool) -> list[Any]:
        nonlocal line_no
        parts = block.split(b"\n")
        if not last:
            parts.pop()  # the block ends with its last line's newline
        if typed and len(block) <= line_limit:
            try:
                items = [decode_item(line) for line in parts if line]
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass  # a line of another shape (or blank, or not JSON): line by line below
            else:
                line_no += len(parts)
                return items
        out = []
        for line in parts:
            line_no += 1
            line = line.strip()
            if len(line) > line_limit:
                # The same refusal whether or not the line arrived in one chunk.
                raise InvalidRequest(f"line {line_no} is longer than {line_limit} bytes")
            if line:
                out.append(decode(line))
        return out

    async for chunk in body.chunks():
        data = buf + chunk
        cut = data.rfind(b"\n") + 1
        buf = data[cut:]
        if cut:
            block = lines(data[:cut], False)
            if block:
                yield block
        if len(buf) > line_limit:
            raise InvalidRequest(f"line {line_no + 1} is longer than {line_limit} bytes")
    if buf.strip():
        yield lines(buf, True)


async def _json_array(body: _Body, item_limit: int) -> AsyncIterator[Any]:
    """The items of a top-level JSON array, decoded one at a time as the bytes arrive. An item that
    is well-formed JSON but not acceptable text (a number of more than 4,300 digits, an unpaired
    surrogate) yields a _LineError in its place, as a bad NDJSON line does."""
    decoder = json.JSONDecoder()
    lenient = json.JSONDecoder(parse_int=_int_or_marker)  # finds the end of an item json refuses
    item_no = 0
    chunks = body.chunks()
    text, pos, pending, eof = "", 0, b"", False

    async def more() -> bool:
        """Append the next chunk to the text buffer; False once the body is exhausted."""
        nonlocal text, pos, pending, eof
        if eof:
            return False
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            eof, chunk = True, b""
        pending += chunk
        try:
            decoded, pending = pending.decode("utf-8"), b""
        except UnicodeDecodeError as exc:
            if eof or len(pending) - exc.start > 4:  # not just a character cut at the chunk edge
                raise InvalidRequest("body is not valid UTF-8") from None
            decoded, pending = pending[: exc.start].decode("utf-8"), pending[exc.start :]
        text, pos = text[pos:] + decoded, 0
        return True

    async def next_char() -> str | None:
        nonlocal pos
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos < len(text):
                return text[pos]
            if not await more():
                return None

    if await next_char() != "[":
        raise InvalidRequest("a JSON batch is an array of items")
    pos += 1
    if await next_char() == "]":
        pos += 1
    else:
        while True:
            if await next_char() is None:
                raise InvalidRequest("truncated JSON array")
            while True:
                try:
                    obj, end = decoder.raw_decode(text, pos)
                except json.JSONDecodeError as exc:
                    # The item may just be incomplete: read more, up to the item size limit.
                    if len(text) - pos > item_limit or not await more():
                        raise InvalidRequest(f"malformed JSON in the batch: {exc.msg}") from None
                    continue
                except RecursionError:
                    raise InvalidRequest("malformed JSON in the batch: nested too deeply") from None
                except ValueError as exc:  # json will not convert a number: find the item's end
                    try:
                        _, end = lenient.raw_decode(text, pos)
                    except json.JSONDecodeError as again:
                        if len(text) - pos > item_limit or not await more():
                            raise InvalidRequest(f"malformed JSON in the batch: {again.msg}") from None
                        continue
                    obj = _LineError(f"item {item_no} is not acceptable JSON: {json_problem(exc)}")
                if end == len(text) and await more():
                    # A number ending at the chunk edge may go on in the next chunk ("1" + "23"):
                    # decode it again with more text behind it.
                    continue
                if end - pos > item_limit:
                    raise InvalidRequest(f"an item of the batch is larger than {item_limit} bytes")
                if not isinstance(obj, _LineError) and has_unpaired_surrogate(text, obj, pos, end):
                    obj = _LineError(f"item {item_no}: {UNPAIRED_SURROGATE}")
                pos = end
                break
            item_no += 1
            yield obj
            sep = await next_char()
            pos += 1
            if sep == "]":
                break
            if sep != ",":
                raise InvalidRequest(
                    "truncated JSON array" if sep is None else "malformed JSON in the batch: expected ',' or ']'"
                )
    if await next_char() is not None:
        raise InvalidRequest("unexpected data after the JSON array")


async def _msgpack_array(body: _Body, item_limit: int) -> AsyncIterator[Any]:
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(item_limit, CHUNK) * 2, strict_map_key=False)
    expected: int | None = None
    seen = 0
    try:
        async for chunk in body.chunks():
            unpacker.feed(chunk)
            if expected is None:
                try:
                    expected = unpacker.read_array_header()
                except msgpack.OutOfData:
                    continue
            while seen < expected:
                start = unpacker.tell()
                try:
                    obj = unpacker.unpack()
                except msgpack.OutOfData:
                    break
                if unpacker.tell() - start > item_limit:
                    raise InvalidRequest(f"an item of the batch is larger than {item_limit} bytes")
                seen += 1
                yield obj
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise InvalidRequest(f"malformed msgpack batch: {exc}"[:300]) from None
    if expected is None or seen < expected:
        raise InvalidRequest("truncated msgpack batch: expected an array of items")
    try:
        unpacker.unpack()
    except msgpack.OutOfData:
        return
    raise InvalidRequest("unexpected data after the msgpack array")


async def _one_by_one(items: AsyncIterator[Any]) -> AsyncIterator[list[Any]]:
    async for obj in items:
        yield [obj]


def _stream(ctype: str, body: _Body, item_limit: int) -> AsyncIterator[list[Any]]:
    """The body's items, a list at a time."""
    if ctype in NDJSON_TYPES:
        return _ndjson_blocks(body, item_limit)
    if ctype == "application/json":
        return _one_by_one(_json_array(body, item_limit))
    if ctype in MSGPACK_TYPES:
        return _one_by_one(_msgpack_array(body, item_limit))
    raise InvalidRequest(
        "Content-Type of a batch must be application/x-ndjson, application/json or application/msgpack, "
        f"got {ctype or 'none'}"
    )


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255 or not key.isprintable():
        raise InvalidRequest("Idempotency-Key must be 1-255 printable characters")
    return key


@batch_routes.post("/api/handles")
async def register_batch(request: web.Request) -> web.Response:
    """Register many handles. Query: ``atomic`` (default true), ``overwrite`` (default false)."""
    caller = await request_caller(request)
    identity = caller.require_authenticated()
    atomic = True if "atomic" not in request.query else flag(request, "atomic")
    overwrite = flag(request, "overwrite")
    key = _idempotency_key(request)
    scoped = f"{identity.key}|{identity.index}|{key}" if key else None
    if scoped is None:
        return await _register(request, caller, atomic, overwrite, None)
    # Retries of one key that arrive together are taken one at a time in this process, so the later
    # ones replay the first reply instead of racing it (across processes the store's write decides).
    locks = request.app[STATE_KEY].idempotency_locks
    entry = locks.setdefault(scoped, (asyncio.Lock(), [0]))
    lock, users = entry
    users[0] += 1
    try:
        async with lock:
            return await _register(request, caller, atomic, overwrite, scoped)
    finally:
        users[0] -= 1
        if not users[0]:
            del locks[scoped]


async def _register(
    request: web.Request, caller: Caller, atomic: bool, overwrite: bool, scoped: str | None
) -> web.Response:
    config = request.app[CONFIG_KEY]
    registry = registry_of(request)
    seen = await registry.store.get_idempotent(scoped) if scoped is not None else None
    validator = BatchValidator(
        registry.writes, caller, overwrite=overwrite, max_items=config.batch_max_items, atomic=atomic
    )
    body = _Body(request, config.batch_max_bytes, validator)
    stream = _stream(request.content_type, body, config.max_body_bytes)
    with gc_paused():
        try:
            if seen is not None:
                # A retry: only the hash of the body matters, the first reply stands.
                async for _ in body.chunks():
                    pass
            else:
                take = validator.take_common
                async for block in stream:
                    for n, obj in enumerate(block, 1):
                        if not n % YIELD_EVERY:
                            await asyncio.sleep(0)  # the store's chunk task (PostgreSQL) takes its next step
                        if type(obj) is Item:
                            if not take(obj):  # packed at once, or the general path
                                await validator.add_common(obj)
                        elif isinstance(obj, _LineError):
                            await validator.fail_item(obj.message)
                        else:
                            await validator.add(obj)
                    await validator.flush()
            digest = body.sha.hexdigest() + ("|atomic" if atomic else "") + ("|overwrite" if overwrite else "")
            if seen is not None:
                stored_hash, stored = seen
                if stored_hash != digest:
                    raise InvalidRequest("this Idempotency-Key was used before with a different request")
                saved = json.loads(stored)
                return _reply(request, saved["status"], saved["body"], replayed=True)
            if validator.count == 0:
                raise InvalidRequest("the batch holds no items")
            report = await validator.finish(atomic=atomic)
        except BodyTooLarge as exc:
            return error_response(request, exc, 413)  # too large, not malformed: 413 rather than 400
        finally:
            await validator.close()  # the store's transaction, if the batch ended before finishing
    BATCH_ITEMS.observe(report.total)
    for outcome, n in (("created", report.created), ("replaced", report.replaced), ("failed", report.failed)):
        if n:
            BATCH_RESULTS.labels(outcome).inc(n)
    reply = report.to_json()
    code = reply["responseCode"]
    status = 201 if code == RC_SUCCESS and report.created else http_status(code)
    if scoped is not None:
        saved_bytes = json.dumps({"status": status, "body": reply}, ensure_ascii=False).encode("utf-8")
        await registry.store.add_idempotent(scoped, digest, saved_bytes, now=registry.clock())
    return _reply(request, status, reply)


def _reply(request: web.Request, status: int, body: dict[str, Any], *, replayed: bool = False) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)
