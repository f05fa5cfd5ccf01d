"""Hardening issue §4 items 7, 8, 9 and 11 on the bureau's routes: numbers and instants a client sends
are checked by registry.inputs' one rule, and answered with 400/404, never 500."""

from __future__ import annotations

import pytest

from tests.promotion_tracker.test_bureau_api import PERIOD, admin, client, clock, make_promoter  # noqa: F401

ROUTES = ["/api/promotion/tallies", "/api/promotion/tallies/1", "/bureau", "/bureau/promoters/1"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/promotion/tallies/%C2%B2",  # item 7: "²".isdigit() is true, int("²") fails
        "/api/promotion/tallies/99999999999999999999",  # item 11: beyond SQLite's INTEGER
        "/api/promotion/tallies/18446744073709551616",
        "/api/promotion/tallies/%EF%BC%91",  # a full-width digit
        "/api/promotion/tallies/1%20",
        "/api/promotion/tallies/" + "9" * 5000,
        "/api/promotion/tallies/%C0%AF",
        "/bureau/promoters/%C2%B2",
        "/bureau/promoters/99999999999999999999",
    ],
)
async def test_promoter_references_out_of_rule_are_400(client, admin, path):  # noqa: F811
    await make_promoter(client, admin, 1)
    r = await client.get(path, params=PERIOD, headers=admin)
    assert r.status == 400, (path, r.status, await r.text())
    if path.startswith("/api/"):
        assert (await r.json())["responseCode"] == 4


async def test_unknown_promoters_are_404_by_id_or_credit_code(client, admin):  # noqa: F811
    await make_promoter(client, admin, 1)
    for ref in ("2", "9223372036854775807", "91350100M000100Y43"):
        for path in (f"/api/promotion/tallies/{ref}", f"/bureau/promoters/{ref}"):
            r = await client.get(path, params=PERIOD, headers=admin)
            assert r.status == 404, (path, await r.text())


@pytest.mark.parametrize(
    "params",
    [
        {"cap": "\u00b2:5"},  # item 8
        {"cap": "1:\u00b2"},
        {"cap": "99999999999999999999:5"},
        {"cap": "1:99999999999999999999"},
        {"cap": "0:5"},
        {"cap": "1:-5"},
        {"cap": "1"},
        {"cap": "1:" + "9" * 5000},
        {"as_of": "0001-01-01T00:00:00+14:00"},  # item 9
        {"as_of": "9999-12-31T23:59:59-12:00"},
        {"as_of": "1969-12-31T23:00:00Z"},
        {"as_of": "2025-06-01T10:00:00+99:00"},
        {"as_of": "２０２５-06-01T10:00:00Z"},
        {"as_of": "x" * 500},
        {"from": "０２５-01-01"},
        {"from": "0001-01-01"},
        {"to": "9999-12-31"},
        {"from": "2025-01-01", "to": "2040-01-01"},  # more than ten years
        {"format": "\u00b2"},
        {"mode": "\u00b2"},
    ],
)
async def test_bad_numbers_and_instants_are_400_on_every_bureau_route(client, admin, params):  # noqa: F811
    await make_promoter(client, admin, 1)
    for path in ROUTES:
        if "format" in params and path.startswith("/bureau"):
            continue  # pages take no format
        r = await client.get(path, params={**PERIOD, **params}, headers=admin)
        assert r.status == 400, (path, params, r.status, await r.text())
        if path.startswith("/bureau"):
            assert r.content_type == "text/html" and 'id="error"' in await r.text()


async def test_good_caps_instants_and_a_credit_code(client, admin, clock):  # noqa: F811
    a = await make_promoter(client, admin, 1)
    clock.now += 7200
    caps = {"cap": [f"{a}:150000, 2:5", ""]}  # several in one value, an empty form field
    r = await client.get(
        "/api/promotion/tallies", params=[*PERIOD.items(), ("cap", caps["cap"][0]), ("cap", "")], headers=admin
    )
    assert r.status == 200
    assert (await r.json())["report"]["contribution_caps_yuan"] == {str(a): 150000, "2": 5}
    # A time without a zone is Beijing time (UTC+8), as the bureau's form sends it.
    r = await client.get("/api/promotion/tallies", params={**PERIOD, "as_of": "2025-06-01T08:30"}, headers=admin)
    assert (await r.json())["report"]["as_of"] == "2025-06-01T00:00:00Z"
    r = await client.get("/api/promotion/tallies", params={**PERIOD, "as_of": "2025-06-01"}, headers=admin)
    assert (await r.json())["report"]["as_of"] == "2025-05-31T16:00:00Z"
    promoters = await (await client.get("/api/promoters", headers=admin)).json()
    uscc = promoters["promoters"][0]["uscc"]
    r = await client.get(f"/api/promotion/tallies/{uscc.lower()}", params=PERIOD, headers=admin)
    assert r.status == 200 and (await r.json())["report"]["promoters"][0]["promoter"]["id"] == a
