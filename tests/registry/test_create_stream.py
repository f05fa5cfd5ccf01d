"""``HandleStore.create_stream``: a batch of new handles written chunk by chunk in one transaction,
on both stores. It must leave the store as ``write`` leaves it for the same creations (records,
versions, listing order, registration counters, value-index queue) and write nothing when it is
atomic and a key exists, when it is aborted, or when it is finished without committing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from registry.model import HandleValue, Record
from registry.packing import pack_head, pack_record, pack_tail
from registry.stores import open_store
from registry.stores.base import MUST_NOT_EXIST, HandleStore, HandleWrite, NewHandle, WriteOutcome, WriteResult
from tests.registry.test_stores import FAR, FEB28, MAR2, NOW, P

CREATED, EXISTS, NOT_WRITTEN = WriteOutcome.CREATED, WriteOutcome.EXISTS, WriteOutcome.NOT_WRITTEN


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[HandleStore]:
    s = await open_store(store_url)
    try:
        yield s
    finally:
        await s.close()


def vals(n: str) -> tuple[HandleValue, ...]:
    return (
        HandleValue(1, "URL", f"https://example.com/{n}".encode(), timestamp=NOW),
        HandleValue(2, "DESC", f"产品 {n} ✓".encode(), timestamp=NOW),
    )


def row(suffix: str, eid: int | None = 1) -> NewHandle:
    handle = f"{P}/{suffix}"
    return NewHandle(handle, handle, P, eid, pack_tail(handle, vals(suffix)))


async def _existing(store: HandleStore) -> int:
    (a,) = await store.write([HandleWrite(f"{P}/a", f"{P}/a", P, vals("a"), MUST_NOT_EXIST, 1)], now=NOW)
    return a.version


def test_a_record_is_its_head_and_tail() -> None:
    for version in (0, 1, 127, 128, 65_536, 2**40):
        for handle in (f"{P}/x", f"{P}/" + "é" * 100, f"{P}/" + "x" * 300):
            record = Record(handle=handle, values=vals("x"), version=version)
            assert pack_head(version) + pack_tail(handle, vals("x")) == pack_record(record)


async def test_a_non_atomic_stream_writes_what_write_would(store: HandleStore) -> None:
    a = await _existing(store)
    backlog = await store.value_index_backlog()
    stream = await store.create_stream(now=NOW + 60, atomic=False)
    stream.add([row("b"), row("a"), row("c")])
    await stream.drain(0)
    stream.add([row("d", None)])
    results = await stream.finish()
    v = results[0].version
    assert v > a
    assert results == [WriteResult(CREATED, v), WriteResult(EXISTS, a), *[WriteResult(CREATED, v)] * 2]
    assert await store.current_version() == v
    got = await store.get(f"{P}/c")
    assert got is not None and got.version == v and got.enterprise_id == 1
    assert got.packed == pack_record(Record(handle=f"{P}/c", values=vals("c"), version=v))
    assert await store.list_handles(P, 0, 10) == (4, [f"{P}/a", f"{P}/b", f"{P}/c", f"{P}/d"])
    assert await store.registration_counts(FEB28, MAR2, FAR) == {1: 3}  # d belongs to no enterprise
    assert await store.value_index_backlog() == backlog + 3


async def test_an_atomic_stream_with_an_existing_key_writes_nothing(store: HandleStore) -> None:
    a = await _existing(store)
    version = await store.current_version()
    stream = await store.create_stream(now=NOW + 60, atomic=True)
    stream.add([row("b"), row("c")])
    stream.add([row("d"), row("a")])
    stream.add([row("e")])  # after the failure: only checked
    results = await stream.finish()
    assert results == [WriteResult(NOT_WRITTEN)] * 3 + [WriteResult(EXISTS, a), WriteResult(NOT_WRITTEN)]
    assert await store.current_version() == version
    assert await store.get(f"{P}/b") is None
    assert await store.list_handles(P, 0, 10) == (1, [f"{P}/a"])
    assert await store.registration_counts(FEB28, MAR2, FAR) == {1: 1}


@pytest.mark.parametrize("how", ["abort", "no commit"])
async def test_an_abandoned_stream_writes_nothing_and_frees_the_store(store: HandleStore, how: str) -> None:
    version = await store.current_version()
    stream = await store.create_stream(now=NOW, atomic=True)
    stream.add([row("b"), row("c")])
    if how == "abort":
        await stream.abort()
        await stream.abort()  # idempotent
    else:
        assert await stream.finish(commit=False) == [WriteResult(NOT_WRITTEN)] * 2
    assert await store.current_version() == version
    assert await store.get(f"{P}/b") is None
    # The write lock is free again: a write goes through at once.
    assert (await _existing(store)) > version
    assert await store.list_handles(P, 0, 10) == (1, [f"{P}/a"])


async def test_the_writer_sends_what_arrived_as_one_chunk_and_splits_only_held_rows(store: HandleStore) -> None:
    """``CreateWriter``: rows that arrive together (a body's piece) go to the store as one chunk, so the
    store writes it while the next arrives instead of the caller waiting on a small remainder; rows held
    back (the end of a batch) are split into near-equal chunks of at least ``CHUNK``."""
    from registry.write_stream import CHUNK, CreateWriter

    sizes: list[int] = []

    async def open_stream():  # the store's real stream, recording the chunks it is given
        stream = await store.create_stream(now=NOW + 60, atomic=False)
        add = stream.add
        stream.add = lambda rows: (sizes.append(len(rows)), add(rows))[1]  # type: ignore[method-assign]
        return stream

    async def nothing(_: object) -> None:
        return None

    writer = CreateWriter(open_stream, store.exists_many, nothing)
    one_piece = CHUNK + CHUNK // 10
    writer.rows.extend(row(f"w{n}") for n in range(one_piece))
    await writer.send_due()
    assert sizes == [one_piece]
    writer.rows.extend(row(f"w{n}") for n in range(one_piece, one_piece + 2 * CHUNK + 500))
    results = await writer.finish()
    assert sizes == [one_piece, CHUNK + 250, CHUNK + 250]
    assert len(results) == one_piece + 2 * CHUNK + 500
    assert {r.outcome for r in results} == {CREATED}
    version = results[0].version
    # Rows at the edges of the SQLite store's multi-row INSERT statements (4,000, 512, 64, 8 and 1 rows)
    # and of the chunks: each is its own record, at the batch's version.
    for n in (0, 3999, 4000, 7999, 8000, 8511, 10559, 10999, 11000, len(results) - 1):
        got = await store.get(f"{P}/w{n}")
        assert got is not None, n
        assert got.packed == pack_record(Record(handle=f"{P}/w{n}", values=vals(f"w{n}"), version=version))
    assert await store.registration_counts(FEB28, MAR2, FAR) == {1: len(results)}
