"""Resolution statistics (解析量): the in-memory counter, its flusher on a real store (day boundary,
prefixes, a store that fails, shutdown), the Prometheus series and ``GET /api/stats/resolutions``.

The node process tests (SIGTERM, ``--workers``) are in ``test_resolution_stats_process.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from registry.days import day_start
from registry.errors import StoreUnavailable
from registry.model import HandleValue
from registry.stores import open_store
from registry.stores.base import HandleStore, HandleWrite, ResolutionCount
from resolver.http.keys import STATE_KEY
from resolver.native.codec import OpFlag, decode_message, encode_message
from resolver.ops import resolutions
from resolver.ops.resolutions import OTHER_LABEL, PrefixLabels, ResolutionCounter, ResolutionFlusher
from tests.resolver.conftest import NODE_PREFIX, basic
from tests.resolver.native_client import HDL_MIME, resolution

# 2025-03-01 00:00 in Beijing; the counter's window begins ten seconds before.
MIDNIGHT = day_start(dt.date(2025, 3, 1))
FEB28, MAR1 = 20250228, 20250301
ENT = "88.118.8.1001"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FlakyStore:
    """A real store whose resolution writes fail on demand: ``fail`` times before the write, or
    ``lose_reply`` times after it committed (a connection lost while COMMIT's answer was on its way);
    ``prefixes_fail``: reading the enterprise prefixes fails."""

    def __init__(self, store: HandleStore) -> None:
        self.store = store
        self.fail = 0
        self.lose_reply = 0
        self.prefixes_fail = False
        self.batches: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def add_resolution_counts(self, batch: str, counts: Any, *, now: int) -> bool:
        self.batches.append(batch)
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("store unavailable (test)")
        added = await self.store.add_resolution_counts(batch, counts, now=now)
        if self.lose_reply:
            self.lose_reply -= 1
            raise StoreUnavailable("connection lost at COMMIT (test)")
        return added

    async def enterprise_prefixes(self) -> list[str]:
        if self.prefixes_fail:
            raise StoreUnavailable("store unavailable (test)")
        return await self.store.enterprise_prefixes()


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[FlakyStore]:  # type: ignore[no-untyped-def]
    s = await open_store(f"sqlite:///{tmp_path}/idnode.db")
    promoter = await s.add_promoter("P", "92440111000000001X", now=MIDNIGHT)
    prefix_handle = f"0.NA/{ENT}"
    values = (HandleValue(index=1, type="URL", data=b"https://example.com"),)
    await s.add_enterprise(
        "E", "91440111000000001X", ENT, promoter.id, HandleWrite(prefix_handle, prefix_handle, "0.NA", values), now=0
    )
    yield FlakyStore(s)
    await s.close()


def flusher_for(store: Any, clock: Clock, **kw: Any) -> tuple[ResolutionCounter, ResolutionFlusher]:
    counter = ResolutionCounter(**({"max_keys": kw.pop("max_keys")} if "max_keys" in kw else {}))
    return counter, ResolutionFlusher(counter, store, NODE_PREFIX, clock=clock, **kw)


async def stored(store: Any, prefix: str | None = None, first: int = FEB28, end: int = 20250302) -> set[tuple]:
    return {
        (c.prefix, c.day, c.interface, c.found, c.not_found) for c in await store.resolution_counts(first, end, prefix)
    }


# -- the counter and its flusher ------------------------------------------------------------------
async def test_counts_go_to_the_day_their_window_began(store: FlakyStore) -> None:
    clock = Clock(MIDNIGHT - 10)
    counter, flusher = flusher_for(store, clock)
    for _ in range(3):
        counter.count(ENT, "rest")
    counter.count(ENT, "native")
    clock.now = MIDNIGHT + 0.02  # the flush at midnight: what came before is 28 February's
    await flusher.tick()
    counter.count(ENT, "rest")
    counter.count(ENT, "rest", found=False)
    clock.now = MIDNIGHT + 5
    await flusher.tick()
    assert await stored(store, ENT) == {
        (ENT, FEB28, "rest", 3, 0),
        (ENT, FEB28, "native", 1, 0),
        (ENT, MAR1, "rest", 1, 1),
    }
    assert flusher.unsaved() == 0


def test_the_flush_loop_wakes_at_midnight() -> None:
    clock = Clock(MIDNIGHT - 2)
    flusher = ResolutionFlusher(ResolutionCounter(), None, NODE_PREFIX, interval=5, clock=clock)  # type: ignore[arg-type]
    assert flusher._delay() == pytest.approx(2.01)
    clock.now = MIDNIGHT - 3600
    assert flusher._delay() == 5


async def test_prefixes_counted_for(store: FlakyStore) -> None:
    """Found handles count for their prefix, prefix handles for the node prefix; not-found handles for
    an enterprise prefix, or else for the node prefix (a made-up prefix never becomes a row)."""
    clock = Clock(MIDNIGHT + 60)
    counter, flusher = flusher_for(store, clock)
    counter.count("88.118.8.1001", "rest")
    counter.count("88.118.8.1001", "rest", found=False)
    counter.count("0.NA", "native")  # 0.NA/88.118.8.1001
    counter.count("0.na", "native", found=False)
    counter.count("88.118.8", "rest")
    counter.count("88.118.8.4242", "rest")  # found: a prefix with handles, enterprise or not
    counter.count("88.118.8.9999", "rest", found=False)  # nobody's prefix
    counter.count("88.118.8.NOPE", "web", found=False)
    await flusher.tick()
    assert await stored(store, None) == {
        ("", MAR1, "native", 1, 1),
        ("", MAR1, "rest", 3, 2),
        ("", MAR1, "web", 0, 1),
    }
    assert {
        (c.prefix, c.interface, c.found, c.not_found) for c in await store.resolution_prefix_totals(MAR1, 20250302)
    } == {
        (ENT, "rest", 1, 1),
        (NODE_PREFIX, "native", 1, 1),
        (NODE_PREFIX, "rest", 1, 1),
        (NODE_PREFIX, "web", 0, 1),
        ("88.118.8.4242", "rest", 1, 0),
    }


async def test_a_failing_store_loses_nothing_and_counts_once(store: FlakyStore, caplog) -> None:  # type: ignore[no-untyped-def]
    clock = Clock(MIDNIGHT + 60)
    counter, flusher = flusher_for(store, clock)
    for _ in range(4):
        counter.count(ENT, "rest")
    store.fail = 2
    with caplog.at_level(logging.WARNING, "idnode.stats"):
        await flusher.tick()  # fails: kept
        assert flusher.unsaved() == 4 and await stored(store, ENT) == set()
        counter.count(ENT, "native")
        await flusher.tick()  # fails again: the batch and the new count both kept
        assert flusher.unsaved() == 5 and flusher.failures == 2
    assert sum("cannot write to the store" in r.message for r in caplog.records) == 1  # logged once, not per try
    await flusher.tick()  # the store is back: the batch, then what came meanwhile
    assert await stored(store, ENT) == {(ENT, MAR1, "rest", 4, 0), (ENT, MAR1, "native", 1, 0)}
    assert flusher.unsaved() == 0 and flusher.failures == 0
    assert store.batches[0] == store.batches[1] == store.batches[2] != store.batches[3]  # retried under its id

    # The write committed but its answer was lost: the retry carries the same id and is not added twice.
    counter.count(ENT, "web")
    store.lose_reply = 1
    await flusher.tick()
    assert flusher.unsaved() == 1
    await flusher.tick()
    assert store.batches[-1] == store.batches[-2]
    assert (ENT, MAR1, "web", 1, 0) in await stored(store, ENT)
    assert flusher.unsaved() == 0


async def test_not_found_counts_wait_for_the_enterprise_prefixes(store: FlakyStore) -> None:
    clock = Clock(MIDNIGHT + 60)
    counter, flusher = flusher_for(store, clock)
    store.prefixes_fail = True
    counter.count(ENT, "rest", found=False)
    counter.count(ENT, "rest")
    await flusher.tick()
    # Found counts are written; the not-found one cannot be placed yet and waits.
    assert await stored(store, ENT) == {(ENT, MAR1, "rest", 1, 0)}
    assert flusher.unsaved() == 1
    store.prefixes_fail = False
    await flusher.close()  # the last flush reads them whenever they were last tried
    assert await stored(store, ENT) == {(ENT, MAR1, "rest", 1, 1)}


async def test_close_flushes_and_gives_up_in_time(store: FlakyStore, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    clock = Clock(MIDNIGHT + 60)
    counter, flusher = flusher_for(store, clock, interval=3600)
    flusher.start()
    counter.count(ENT, "rest")
    counter.count(ENT, "native")
    await flusher.close()  # the periodic flush has not run: close writes them
    assert await stored(store, ENT) == {(ENT, MAR1, "rest", 1, 0), (ENT, MAR1, "native", 1, 0)}

    monkeypatch.setattr(resolutions, "CLOSE_TIMEOUT", 1.2)
    counter, flusher = flusher_for(store, clock)
    counter.count(ENT, "web")
    store.fail = 10**6
    with caplog.at_level(logging.ERROR, "idnode.stats"):
        await flusher.close()  # a store that stays down: a bounded wait, then an error naming what is lost
    assert "1 counted resolutions could not be saved" in caplog.text
    assert len(store.batches) >= 2


def test_the_counter_holds_a_bounded_number_of_prefixes() -> None:
    counter = ResolutionCounter(max_keys=3)
    for i in range(10):
        counter.count(f"88.118.8.{i}", "rest", found=False)
    counter.count("88.118.8.0", "rest", found=False)
    found, missing = counter.take()
    assert missing["rest"] == {"88.118.8.0": 2, "88.118.8.1": 1, "88.118.8.2": 1, "": 7}
    assert found == {"rest": {}, "native": {}, "web": {}}
    assert counter.take()[1]["rest"] == {}
    with pytest.raises(KeyError):
        counter.count(ENT, "smoke-signals")  # a new interface is added to INTERFACES, not made up


def test_prefix_labels_are_bounded() -> None:
    labels = PrefixLabels(2)
    assert [labels(p) for p in ("A", "B", "C", "A", "D", "B")] == ["A", "B", OTHER_LABEL, "A", OTHER_LABEL, "B"]
    assert [PrefixLabels(0)(p) for p in ("A", "B")] == [OTHER_LABEL, OTHER_LABEL]


def sample(name: str, interface: str, prefix: str) -> float:
    return REGISTRY.get_sample_value(name, {"interface": interface, "prefix": prefix}) or 0.0


async def test_prometheus_series_have_bounded_prefix_labels(store: FlakyStore) -> None:
    counter, flusher = flusher_for(store, Clock(MIDNIGHT + 60), metric_prefixes=2)
    prefixes = [f"88.118.8.77{i:02d}" for i in range(6)]
    other_before = sample("idnode_resolutions_total", "native", OTHER_LABEL)
    for n, prefix in enumerate(prefixes, start=1):
        for _ in range(n):
            counter.count(prefix, "native")
    counter.count(ENT, "native", found=False)
    await flusher.tick()
    own = {p: sample("idnode_resolutions_total", "native", p) for p in prefixes}
    assert sorted(own.values()) == [0, 0, 0, 0, 1, 2]  # the first two seen (in counting order)
    assert sample("idnode_resolutions_total", "native", OTHER_LABEL) - other_before == 3 + 4 + 5 + 6
    # Not-found resolutions are their own series, under the same bound (their label is taken here).
    assert sample("idnode_resolutions_not_found_total", "native", OTHER_LABEL) >= 1


# -- the node: hooks, API, metrics ----------------------------------------------------------------
@pytest.fixture
def config_overrides(store_url: str) -> dict[str, Any]:
    """Each node test on both stores; flushed by the tests, when they choose."""
    return {"stats_flush_seconds": 3600, "store": store_url}


async def flush(client: TestClient) -> None:
    flusher = client.app[STATE_KEY].resolution_flusher
    assert flusher is not None
    await flusher.tick()


async def stats(client: TestClient, headers: dict[str, str] | None, **params: str) -> tuple[int, Any]:
    r = await client.get("/api/stats/resolutions", params=params, headers=headers)
    return r.status, await r.json()


async def native_http(client: TestClient, handle: str) -> int:
    request = resolution(handle, op_flags=OpFlag.REC)
    r = await client.post(
        "/" + handle.replace("/", "%2F"), data=encode_message(request), headers={"Content-Type": HDL_MIME}
    )
    assert r.status == 200
    return decode_message(await r.read()).header.response_code


@pytest.fixture
async def auditor(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    r = await client.post("/api/auditors", json={"name": "bureau"}, headers=admin)
    assert r.status == 201
    reply = await r.json()
    return basic(reply["identity"], reply["secret"])


async def test_every_interface_is_counted_and_read_back(client, admin, onboard, auditor) -> None:  # type: ignore[no-untyped-def]
    one, two = await onboard(), await onboard()
    p1, p2 = one["prefix"], two["prefix"]
    r = await client.put(
        f"/api/handles/{p1}/SKU-1",
        json=[{"index": 1, "type": "URL", "data": "https://e.example/1"}],
        headers=one["headers"],
    )
    assert r.status == 201
    for _ in range(3):  # the hot path
        assert (await client.get(f"/api/handles/{p1}/SKU-1")).status == 200
    assert (await client.get(f"/api/handles/{p1}/SKU-1", params={"type": "URL"})).status == 200  # filtered path
    assert (await client.get(f"/api/handles/{p1}/SKU-1", headers=one["headers"])).status == 200  # with credentials
    assert (await client.get(f"/api/handles/{p1}/nope")).status == 404
    assert (await client.get(f"/api/handles/{p1}/nope", params={"auth": ""})).status == 404
    assert await native_http(client, f"{p1}/SKU-1") == 1
    assert await native_http(client, f"{p1}/missing") == 100
    assert (await client.get("/api/handles/99.1/elsewhere")).status == 400  # another node's: not counted
    assert (await client.get(f"/api/handles/0.NA/{p2}")).status == 200  # a prefix handle: the node's
    await flush(client)

    status, body = await stats(client, one["headers"], prefix=p1)
    assert status == 200, body
    assert body["prefix"] == p1 and body["interfaces"] == ["rest", "native", "web"]
    assert body["totals"] == {
        "resolutions": 6,
        "not_found": 3,
        "by_interface": {
            "rest": {"resolutions": 5, "not_found": 2},
            "native": {"resolutions": 1, "not_found": 1},
            "web": {"resolutions": 0, "not_found": 0},
        },
    }
    assert len(body["days"]) == 30 and body["days"][-1]["resolutions"] == 6
    assert sum(d["resolutions"] for d in body["days"][:-1]) == 0
    today = dt.datetime.fromisoformat(body["days"][-1]["day"]).date()
    assert body["period"] == {
        "from": (today - dt.timedelta(days=29)).isoformat(),
        "to": (today + dt.timedelta(days=1)).isoformat(),
        "timezone": "Asia/Shanghai",
    }
    assert "prefixes" not in body

    # The node administrator and the auditor: any prefix, and every prefix at once.
    for who in (admin, auditor):
        status, body = await stats(client, who)
        assert status == 200, body
        assert body["prefix"] is None
        assert body["totals"]["resolutions"] == 7 and body["totals"]["not_found"] == 3
        rows = {row["prefix"]: (row["enterprise"], row["resolutions"], row["not_found"]) for row in body["prefixes"]}
        assert rows == {p1: ("Enterprise 1", 6, 3), NODE_PREFIX: (None, 1, 0)}
        status, body = await stats(client, who, prefix=f"0.NA/{p2}")
        assert (status, body["prefix"], body["totals"]["resolutions"]) == (200, p2, 0)

    # Counts add up across flushes.
    assert (await client.get(f"/api/handles/{p1}/SKU-1")).status == 200
    await flush(client)
    assert (await stats(client, one["headers"], prefix=p1))[1]["totals"]["resolutions"] == 7


async def test_who_may_read_the_statistics(client, admin, onboard, auditor) -> None:  # type: ignore[no-untyped-def]
    one, two = await onboard(), await onboard()
    p1 = one["prefix"]
    assert (await stats(client, None, prefix=p1))[0] == 401
    assert (await stats(client, None))[0] == 401
    status, body = await stats(client, two["headers"], prefix=p1)  # another enterprise
    assert (status, body["responseCode"]) == (403, 400), body
    status, body = await stats(client, one["headers"])  # an enterprise asking for every prefix
    assert status == 403 and "prefix=" in body["message"]
    assert (await stats(client, one["headers"], prefix=NODE_PREFIX))[0] == 403
    assert (await stats(client, one["headers"], prefix="88.118.8.4242"))[0] == 403  # nobody's prefix
    assert (await stats(client, one["headers"], prefix=p1.lower()))[0] == 200
    assert (await stats(client, basic(one["admin"], "wrong-secret"), prefix=p1))[0] == 401
    for who in (admin, auditor):
        assert (await stats(client, who, prefix=NODE_PREFIX))[0] == 200


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2025-13-01"}, "from must be a date written YYYY-MM-DD"),
        ({"to": "20250101"}, "to must be a date written YYYY-MM-DD"),
        ({"from": "２０２５-01-01"}, "from must be a date"),
        ({"from": "0001-01-01", "to": "0001-02-01"}, "between 1970-01-01 and 9998-12-31"),
        ({"from": "2025-03-01", "to": "2025-03-01"}, "the period is empty"),
        ({"from": "2025-03-02", "to": "2025-03-01"}, "the period is empty"),
        ({"from": "2024-01-01", "to": "2025-01-02"}, "at most 366 days"),
        ({"from": "2020-01-01"}, "at most 366 days"),
        ({"prefix": "99.1"}, "not responsible"),
        ({"prefix": "88.118.8./x"}, "invalid prefix"),
        ({"prefix": "9" * 100}, "prefix must be a prefix"),
        ({"prefix": "88.118.8\x00"}, "prefix must be a prefix"),
    ],
)
async def test_bad_queries_are_400(client, admin, params, message) -> None:  # type: ignore[no-untyped-def]
    status, body = await stats(client, admin, **params)
    assert status == 400, body
    assert message in body["message"]


async def test_a_full_year_and_a_leap_year(client, admin) -> None:  # type: ignore[no-untyped-def]
    status, body = await stats(client, admin, **{"from": "2024-01-01", "to": "2025-01-01"})
    assert status == 200 and len(body["days"]) == 366
    assert body["days"][59]["day"] == "2024-02-29"
    status, body = await stats(client, admin, **{"to": "2025-03-01"})
    assert status == 200 and body["period"]["from"] == "2025-01-30" and len(body["days"]) == 30


async def test_business_metrics_carry_the_resolutions(client, admin, onboard) -> None:  # type: ignore[no-untyped-def]
    ent = await onboard()
    prefix = ent["prefix"]
    r = await client.put(
        f"/api/handles/{prefix}/M-1",
        json=[{"index": 1, "type": "URL", "data": "https://e.example/m"}],
        headers=ent["headers"],
    )
    assert r.status == 201
    before = sample("idnode_resolutions_total", "rest", prefix)
    for _ in range(2):
        assert (await client.get(f"/api/handles/{prefix}/M-1")).status == 200
    await flush(client)
    assert sample("idnode_resolutions_total", "rest", prefix) - before == 2
    business = await (await client.get("/metrics/business", headers=admin)).text()
    assert f'idnode_resolutions_total{{interface="rest",prefix="{prefix}"}}' in business
    operational = await (await client.get("/metrics")).text()
    assert "idnode_resolutions_total" not in operational  # business figures stay behind credentials


async def test_the_hot_path_counts_without_awaiting_the_store(client, onboard) -> None:  # type: ignore[no-untyped-def]
    """A resolution is counted in memory: nothing reaches the store until the flush."""
    ent = await onboard()
    prefix = ent["prefix"]
    r = await client.put(
        f"/api/handles/{prefix}/H-1",
        json=[{"index": 1, "type": "URL", "data": "https://e.example/h"}],
        headers=ent["headers"],
    )
    assert r.status == 201
    store = client.app[STATE_KEY].registry.store  # type: ignore[union-attr]
    await asyncio.gather(*(client.get(f"/api/handles/{prefix}/H-1") for _ in range(20)))
    today = [d for d in (await store.resolution_prefix_totals(19700101, 99990101))]
    assert today == []
    await flush(client)
    rows = await store.resolution_prefix_totals(19700101, 99990101)
    assert [(c.prefix, c.interface, c.found) for c in rows] == [(prefix, "rest", 20)]
    assert isinstance(rows[0], ResolutionCount)
