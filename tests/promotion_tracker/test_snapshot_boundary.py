"""§1 of issue 14: one boundary rule (a snapshot at S sees what was recorded strictly before S), tested
at the exact second, and a final report that gives the same bytes forever."""

from __future__ import annotations

import datetime as dt

from promotion_tracker.tally import SETTLE_SECONDS
from tests.promotion_tracker.test_bureau_api import (  # noqa: F401 (fixtures)
    PERIOD,
    admin,
    award_of,
    client,
    clock,
    make_enterprise,
    make_promoter,
    register,
    tally,
)

S = int(dt.datetime(2025, 6, 1, 19, 0, tzinfo=dt.UTC).timestamp())  # the snapshot: 19:00:00Z


def iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _delete(client, ent: dict, n: int) -> None:  # noqa: F811
    r = await client.delete(f"/api/handles/{ent['prefix']}/SKU-{n:06d}", headers=ent["headers"])
    assert r.status == 200, await r.text()


async def _move(client, admin, ent: dict, promoter: int) -> None:  # noqa: F811
    r = await client.patch(f"/api/enterprises/{ent['prefix']}", json={"promoter": promoter}, headers=admin)
    assert r.status == 200, await r.text()


async def test_changes_at_the_snapshot_second_are_outside_it_and_one_second_earlier_inside(
    client,  # noqa: F811
    admin,  # noqa: F811
    clock,  # noqa: F811
):
    clock.now = S - 3 * 3600
    a, b = await make_promoter(client, admin, 1), await make_promoter(client, admin, 2)
    early, late = await make_enterprise(client, admin, 1, a), await make_enterprise(client, admin, 2, a)
    await register(client, early, 10)
    await register(client, late, 10)

    # One second before S: a deletion and a move. Exactly at S: the same again on the other enterprise.
    clock.now = S - 1
    await _delete(client, early, 0)
    await _move(client, admin, early, b)
    clock.now = S
    await _delete(client, late, 0)
    await _move(client, admin, late, b)
    c = await make_promoter(client, admin, 3)  # a promoter created at S is not in the snapshot either

    clock.now = S + SETTLE_SECONDS
    report = await tally(client, admin, as_of=iso(S))
    assert report["as_of"] == iso(S) and report["final"] is True
    # Recorded before S: early's deletion and move count. Recorded at S: neither of late's does.
    assert award_of(report, b)["enterprises"] == 1 and award_of(report, b)["registrations"] == 9
    assert award_of(report, a)["enterprises"] == 1 and award_of(report, a)["registrations"] == 10
    assert c not in [p["promoter"]["id"] for p in report["promoters"]]
    # The next snapshot sees all of it.
    clock.now = S + 3600 + SETTLE_SECONDS
    after = await tally(client, admin, as_of=iso(S + 3600))
    assert award_of(after, b)["enterprises"] == 2 and award_of(after, b)["registrations"] == 18
    assert award_of(after, a)["enterprises"] == 0 and c in [p["promoter"]["id"] for p in after["promoters"]]


async def test_a_snapshot_is_final_only_once_it_has_settled(client, admin, clock):  # noqa: F811
    await make_promoter(client, admin, 1)
    for now, final in ((S - 1, False), (S, False), (S + SETTLE_SECONDS - 1, False), (S + SETTLE_SECONDS, True)):
        clock.now = now
        assert (await tally(client, admin, as_of=iso(S)))["final"] is final, now
    assert (await tally(client, admin))["final"] is False  # a live tally never is


async def test_a_final_report_gives_the_same_bytes_forever(client, admin, clock):  # noqa: F811
    clock.now = S - 2 * 3600
    a, b = await make_promoter(client, admin, 1), await make_promoter(client, admin, 2)
    ents = [await make_enterprise(client, admin, n, a) for n in range(1, 4)]
    for ent in ents:
        await register(client, ent, 20)
    params = {**PERIOD, "as_of": iso(S), "cap": f"{a}:150000"}

    async def fetch(path: str, **extra: str) -> bytes:
        r = await client.get(path, params={**params, **extra}, headers=admin)
        assert r.status == 200, await r.text()
        return await r.read()

    paths = ["/api/promotion/tallies", f"/api/promotion/tallies/{a}"]
    clock.now = S + SETTLE_SECONDS
    first = {(p, f): await fetch(p, format=f) for p in paths for f in ("json", "csv", "xlsx")}
    # Time passes and everything that can change, changes.
    clock.now = S + 3600
    await register(client, ents[0], 5, start=100)
    await _delete(client, ents[1], 0)
    await _move(client, admin, ents[2], b)
    await make_promoter(client, admin, 3)
    await make_enterprise(client, admin, 9, b)
    clock.now = S + 400 * 86400
    for key, body in first.items():
        assert await fetch(key[0], format=key[1]) == body, key
