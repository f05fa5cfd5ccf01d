"""Write events on both stores: every commit is published once, with the right kinds, keys, handle
texts and prefixes; batches are one commit; subscribers are awaited before the write returns; a
batch plan is applied only by the service that made it; the registration counts follow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from registry.batch import BatchValidator
from registry.counts import registrations_by_prefix
from registry.errors import HandleAlreadyExists, ServerError
from registry.importer import import_file
from registry.model import HandleValue, parse_handle
from registry.service import NodeSettings, Registry
from registry.stores import open_store
from registry.write_events import Commit, WriteEvent
from registry.write_plan import Change, Mode, WriteRequest
from tests.registry.test_importer import NODE, node_admin, onboard, url_row, write_ndjson

ADMIN = node_admin()


class Recorder:
    """A subscriber that keeps the events of each commit."""

    def __init__(self) -> None:
        self.commits: list[list[WriteEvent]] = []

    async def __call__(self, commit: Commit) -> None:
        self.commits.append(commit.events)

    def take(self) -> list[list[tuple[str, str, str, str]]]:
        out = [[(e.change.value, e.key, e.handle, e.prefix) for e in events] for events in self.commits]
        self.commits.clear()
        return out


@pytest.fixture
async def node(store_url: str) -> AsyncIterator[tuple[Registry, Any, Recorder]]:
    store = await open_store(store_url)
    registry = Registry(store, NodeSettings(prefix=NODE))
    recorder = Recorder()
    registry.subscribe(recorder)
    try:
        enterprise = await onboard(registry)
        yield registry, enterprise, recorder
    finally:
        registry.close()
        await store.close()


def url(data: str = "https://e.com/1", index: int = 1) -> HandleValue:
    return HandleValue(index, "URL", data.encode())


def item(handle: str) -> dict[str, Any]:
    return {"handle": handle, "values": [{"index": 1, "type": "URL", "data": "https://e.com/b"}]}


async def test_bootstrap_onboarding_and_single_writes_publish_their_changes(node) -> None:  # type: ignore[no-untyped-def]
    registry, ent, recorder = node
    p = ent.prefix
    assert recorder.take() == [
        [("created", "0.NA/88.118.8", "0.NA/88.118.8", "0.NA")],  # the node's prefix handle at bootstrap
        [("created", f"0.NA/{p}", f"0.NA/{p}", "0.NA")],  # the enterprise's, at onboarding
    ]
    name = registry.parse(f"{p}/Sku-1")
    one = [(name.key, name.text, p)]
    await registry.put_handle(ADMIN, name, [url()])
    await registry.put_handle(ADMIN, name, [url("https://e.com/2")])  # replace
    await registry.put_handle(ADMIN, name, [url("https://e.com/3", 2)], indexes=[2])  # index=
    await registry.delete(ADMIN, name, [2])  # one value
    await registry.delete(ADMIN, name)
    kinds = ["created", "replaced", "replaced", "replaced", "deleted"]
    assert recorder.take() == [[(kind, *one[0])] for kind in kinds]
    await registry.put_handle(ADMIN, name, [url()], overwrite=False)
    recorder.take()
    with pytest.raises(HandleAlreadyExists):
        await registry.put_handle(ADMIN, name, [url()], overwrite=False)
    assert recorder.take() == []  # nothing written, nothing published


async def test_auditor_identities_are_written_through_the_writer(node) -> None:  # type: ignore[no-untyped-def]
    registry, _, recorder = node
    recorder.take()
    await registry.add_auditor(ADMIN, "baiyun")
    await registry.revoke_auditor(ADMIN, "baiyun")
    key = parse_handle(f"{NODE}/auditor/baiyun").key
    assert recorder.take() == [
        [("created", key, f"{NODE}/auditor/baiyun", NODE)],
        [("deleted", key, f"{NODE}/auditor/baiyun", NODE)],
    ]


async def test_a_batch_is_one_commit_and_a_refused_atomic_batch_none(node) -> None:  # type: ignore[no-untyped-def]
    registry, ent, recorder = node
    p = ent.prefix
    recorder.take()
    batch = BatchValidator(registry.writes, ADMIN)
    for n in range(3):
        await batch.add(item(f"{p}/b-{n}"))
    await batch.add(item(f"{NODE}.9999/elsewhere"))  # not allocated on this node
    report = await batch.finish(atomic=False)
    assert (report.created, report.failed) == (3, 1)
    assert recorder.take() == [[("created", f"{p}/b-{n}", f"{p}/b-{n}", p) for n in range(3)]]

    again = BatchValidator(registry.writes, ADMIN, overwrite=True)
    for n in range(2):
        await again.add(item(f"{p}/b-{n}"))
    assert (await again.finish()).replaced == 2
    assert recorder.take() == [[("replaced", f"{p}/b-{n}", f"{p}/b-{n}", p) for n in range(2)]]

    refused = BatchValidator(registry.writes, ADMIN)
    await refused.add(item(f"{p}/b-new"))
    await refused.add(item(f"{p}/b-0"))  # exists: the atomic batch writes nothing
    report = await refused.finish(atomic=True)
    assert (report.written, report.failed) == (False, 1)
    assert recorder.take() == []


async def test_subscribers_are_awaited_in_order_before_the_write_returns(node) -> None:  # type: ignore[no-untyped-def]
    registry, ent, _ = node
    seen: list[str] = []

    async def slow(commit: Commit) -> None:
        for _ in range(5):
            await asyncio.sleep(0)  # yields to the loop: the writer must still wait
        seen.append(f"slow {commit.keys}")

    async def second(commit: Commit) -> None:
        seen.append(f"second {dict((c.value, n) for c, n in commit.counts().items())}")

    registry.subscribe(slow)
    registry.subscribe(second)
    name = registry.parse(f"{ent.prefix}/awaited")
    await registry.put_handle(ADMIN, name, [url()])
    assert seen == [f"slow {[name.key]}", "second {'created': 1}"]


async def test_a_batch_plan_is_applied_once_and_only_by_the_service_that_made_it(node, store_url) -> None:  # type: ignore[no-untyped-def]
    registry, ent, recorder = node
    recorder.take()
    name = registry.parse(f"{ent.prefix}/planned")
    planner = registry.writes.plan_batch(ADMIN)
    assert await planner.add(WriteRequest(name, Mode.CREATE, (url(),))) is None
    plan = await planner.finish()
    other = Registry(registry.store, NodeSettings(prefix=NODE))
    try:
        with pytest.raises(ServerError):
            await other.writes.apply(plan)
    finally:
        other.close()
    (result,) = await registry.writes.apply(plan)
    assert result is not None and result.ok
    with pytest.raises(ServerError):
        await registry.writes.apply(plan)
    assert recorder.take() == [[("created", name.key, name.text, ent.prefix)]]
    assert not hasattr(registry, "write_many") and not hasattr(registry.writes, "write_many")


async def test_registration_counts_follow_imports_and_deletes(node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry, ent, recorder = node
    path = write_ndjson(tmp_path / "rows.ndjson", [url_row(n) for n in range(7)])
    summary = await import_file(registry, ADMIN, path, prefix=ent.prefix, fmt="ndjson", chunk=3)
    assert summary.created == 7
    created = [e for events in recorder.commits for e in events if e.prefix == ent.prefix]
    assert len(created) == 7 and {e.change for e in created} == {Change.CREATED}
    assert await registrations_by_prefix(registry.store) == {ent.prefix: 7}
    await registry.delete(ADMIN, registry.parse(f"{ent.prefix}/SKU-00003"))
    assert await registrations_by_prefix(registry.store) == {ent.prefix: 6}
