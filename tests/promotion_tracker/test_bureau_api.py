"""Clause-8 tallies end to end through the HTTP API: batch registrations, snapshots, moves, signatures,
and who may read them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from promotion_tracker.signing import VerifyError, verify_document
from registry import valuedata
from resolver.cli import main
from resolver.config import load_config
from resolver.http.app import create_app
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, basic, make_uscc

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
T0 = int(dt.datetime(2025, 6, 1, 10, 15, tzinfo=SHANGHAI).timestamp())
HOUR = 3600
PERIOD = {"from": "2025-01-01", "to": "2026-01-01"}


def iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
async def client(tmp_path, monkeypatch, clock) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    config = load_config(env={}, overrides={"data_dir": str(tmp_path), "native_port": 0})
    async with TestClient(TestServer(create_app(config, clock=clock))) as c:
        yield c


@pytest.fixture
def admin() -> dict[str, str]:
    return basic(NODE_ADMIN, ADMIN_SECRET)


async def post(client: TestClient, path: str, body: object, headers: dict[str, str], status: int = 201) -> dict:
    r = await client.post(path, json=body, headers=headers)
    assert r.status == status, await r.text()
    return await r.json()


async def make_promoter(client: TestClient, admin: dict[str, str], n: int) -> int:
    return (await post(client, "/api/promoters", {"name": f"推广单位 {n}", "uscc": make_uscc(n, "92")}, admin))["id"]


async def make_enterprise(client: TestClient, admin: dict[str, str], n: int, promoter: int) -> dict:
    body = {"name": f"应用企业 {n}", "uscc": make_uscc(n), "promoter": promoter}
    reply = await post(client, "/api/enterprises", body, admin)
    reply["headers"] = basic(reply["admin"], reply["secret"])
    return reply


async def register(client: TestClient, ent: dict, count: int, start: int = 0) -> None:
    lines = (
        json.dumps(
            {
                "handle": f"{ent['prefix']}/SKU-{i:06d}",
                "values": [{"index": 1, "type": "URL", "data": f"https://e/{i}"}],
            }
        )
        for i in range(start, start + count)
    )
    r = await client.post(
        "/api/handles",
        data="\n".join(lines).encode(),
        headers={**ent["headers"], "Content-Type": "application/x-ndjson"},
    )
    body = await r.json()
    assert r.status == 201, body
    assert body["created"] == count


async def tally(client: TestClient, headers: dict[str, str], **params: str) -> dict:
    r = await client.get("/api/promotion/tallies", params={**PERIOD, **params}, headers=headers)
    assert r.status == 200, await r.text()
    document = await r.json()
    verify_document(document)
    return document["report"]


def award_of(report: dict, promoter: int) -> dict:
    (row,) = [p for p in report["promoters"] if p["promoter"]["id"] == promoter]
    return row


async def test_21_enterprises_of_10000_each_earn_210000(client, admin, clock):
    a = await make_promoter(client, admin, 1)
    b = await make_promoter(client, admin, 2)
    enterprises = [await make_enterprise(client, admin, n, a) for n in range(1, 22)]
    for ent in enterprises:
        await register(client, ent, 10_000)

    # Snapshot S1, one hour after the registrations; then time moves on.
    s1 = iso(T0 + HOUR)
    clock.now = T0 + 2 * HOUR
    report = await tally(client, admin, as_of=s1)
    assert report["final"] is True and report["as_of"] == iso((T0 + HOUR) // HOUR * HOUR)
    row = award_of(report, a)
    assert (row["enterprises"], row["eligible_enterprises"], row["registrations"]) == (21, 21, 210_000)
    assert row["award_yuan"] == 210_000
    assert row["award"]["increment_enterprises"] == 1 and row["award"]["mode"] == "per_enterprise"
    assert award_of(report, b)["award_yuan"] == 0
    pooled = award_of(await tally(client, admin, as_of=s1, mode="pooled"), a)
    assert pooled["award_yuan"] == 210_000 and pooled["award"]["mode"] == "pooled"

    # Deleting identifiers after the snapshot does not change that snapshot's tally ...
    first = enterprises[0]
    for i in range(5):
        r = await client.delete(f"/api/handles/{first['prefix']}/SKU-{i:06d}", headers=first["headers"])
        assert r.status == 200, await r.text()
    assert award_of(await tally(client, admin, as_of=s1), a)["award_yuan"] == 210_000
    # ... but a live tally sees it: 20 enterprises of 10,000 and one of 9,995 leave no increment.
    live = await tally(client, admin)
    assert live["final"] is False
    assert award_of(live, a)["registrations"] == 209_995
    assert award_of(live, a)["award_yuan"] == 200_000

    # Moving an enterprise counts for the new promoter from the next snapshot on.
    clock.now = T0 + 3 * HOUR
    last = enterprises[-1]
    r = await client.patch(f"/api/enterprises/{last['prefix']}", json={"promoter": b}, headers=admin)
    assert r.status == 200, await r.text()
    before = await tally(client, admin, as_of=iso(T0 + 2 * HOUR + 1800))
    assert award_of(before, a)["enterprises"] == 21 and award_of(before, b)["enterprises"] == 0
    clock.now = T0 + 5 * HOUR
    after = await tally(client, admin, as_of=iso(T0 + 4 * HOUR))
    assert award_of(after, a)["enterprises"] == 20 and award_of(after, b)["enterprises"] == 1
    assert award_of(after, b)["registrations"] == 10_000
    # The same enterprise is never counted for two promoters.
    assert award_of(after, a)["registrations"] + award_of(after, b)["registrations"] == 209_995

    # One promoter's rows, and the CSV.
    r = await client.get(f"/api/promotion/tallies/{a}", params={**PERIOD, "as_of": s1}, headers=admin)
    rows = (await r.json())["report"]["promoters"][0]["enterprise_rows"]
    assert len(rows) == 21 and sum(x["registrations"] for x in rows) == 210_000
    assert sum(x["increment"] for x in rows) == 1
    query = {**PERIOD, "as_of": s1, "format": "csv", "lang": "en"}
    r = await client.get("/api/promotion/tallies", params=query, headers=admin)
    assert r.status == 200 and r.content_type == "text/csv"
    table = {row["promoter_id"]: row for row in csv.DictReader(io.StringIO((await r.read()).decode("utf-8-sig")))}
    assert table[str(a)]["award_yuan"] == "210000" and table[str(a)]["eligible_enterprises"] == "21"


async def test_registrations_outside_the_period_do_not_count(client, admin, clock):
    a = await make_promoter(client, admin, 1)
    ent = await make_enterprise(client, admin, 1, a)
    await register(client, ent, 30)  # 2025-06-01
    clock.now = int(dt.datetime(2026, 1, 1, 0, 30, tzinfo=SHANGHAI).timestamp())  # the next period
    await register(client, ent, 7, start=100)
    clock.now += 2 * HOUR
    assert award_of(await tally(client, admin), a)["registrations"] == 30
    next_year = await tally(client, admin, **{"from": "2026-01-01", "to": "2027-01-01"})
    assert award_of(next_year, a)["registrations"] == 7
    # Replacing an identifier is not a new registration.
    r = await client.put(
        f"/api/handles/{ent['prefix']}/SKU-000000",
        json={"values": [{"index": 1, "type": "URL", "data": "https://e/changed"}]},
        headers=ent["headers"],
    )
    assert r.status == 200
    assert award_of(await tally(client, admin), a)["registrations"] == 30


async def test_signed_report_verifies_and_detects_tampering(client, admin, tmp_path):
    await make_promoter(client, admin, 1)
    r = await client.get("/api/promotion/tallies", params=PERIOD, headers=admin)
    document = await r.json()
    key = await (await client.get("/api/promotion/public-key")).json()
    assert verify_document(document, key["pem"]) == key["key_id"]
    # The same key is published on the node's prefix handle, as PEM under a value type of its own
    # (HANDLE.NET reads no Ed25519 HS_PUBKEY); the record holds no HS_PUBKEY at all.
    assert key["handle_value"] == {"index": 301, "type": "IDNODE_REPORT_KEY"}
    record = await (await client.get("/api/handles/0.NA/88.118.8", params={"index": "301"})).json()
    (value,) = record["values"]
    assert value["type"] == "IDNODE_REPORT_KEY"
    assert value["data"] == {"format": "string", "value": key["pem"]}
    assert verify_document(document, value["data"]["value"]) == key["key_id"]
    whole = await (await client.get("/api/handles/0.NA/88.118.8")).json()
    assert not [v for v in whole["values"] if v["type"] == "HS_PUBKEY"]
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    pem = tmp_path / "node.pem"
    pem.write_text(key["pem"], encoding="utf-8")
    ok = CliRunner().invoke(main, ["tally", "verify", str(saved), "--public-key", str(pem)])
    assert ok.exit_code == 0 and "OK" in ok.output
    document["report"]["promoters"][0]["award_yuan"] = 1_000_000
    with pytest.raises(VerifyError):
        verify_document(document, key["pem"])
    saved.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    bad = CliRunner().invoke(main, ["tally", "verify", str(saved), "--public-key", str(pem)])
    assert bad.exit_code == 1 and "INVALID" in bad.output


async def test_auditor_reads_tallies_and_writes_nothing(client, admin):
    a = await make_promoter(client, admin, 1)
    ent = await make_enterprise(client, admin, 1, a)
    auditor = await post(client, "/api/auditors", {"name": "baiyun-bureau"}, admin)
    assert auditor["identity"] == "300:88.118.8/auditor/baiyun-bureau"
    bureau = basic(auditor["identity"], auditor["secret"])
    assert (await client.get("/api/promotion/tallies", params=PERIOD, headers=bureau)).status == 200
    assert (await client.get(f"/api/promotion/tallies/{a}", params=PERIOD, headers=bureau)).status == 200
    assert (await client.get("/bureau", headers=bureau)).status == 200
    assert (await client.get("/api/enterprises", headers=bureau)).status == 200

    value = {"values": [{"index": 1, "type": "URL", "data": "https://e"}]}
    batch = json.dumps({"handle": f"{ent['prefix']}/x", "values": value["values"]})
    writes = [
        client.put(f"/api/handles/{ent['prefix']}/x", json=value, headers=bureau),
        client.put("/api/handles/88.118.8/x", json=value, headers=bureau),
        client.put("/api/handles/88.118.8/auditor/baiyun-bureau", json=value, headers=bureau),
        client.delete("/api/handles/88.118.8/auditor/baiyun-bureau", headers=bureau),
        client.post("/api/handles", data=batch, headers={**bureau, "Content-Type": "application/x-ndjson"}),
        client.post("/api/promoters", json={"name": "x", "uscc": make_uscc(50, "92")}, headers=bureau),
        client.post("/api/enterprises", json={"name": "x", "uscc": make_uscc(50), "promoter": a}, headers=bureau),
        client.patch(f"/api/enterprises/{ent['prefix']}", json={"status": "disabled"}, headers=bureau),
        client.post("/api/auditors", json={"name": "second"}, headers=bureau),
        client.post("/api/templates", json={"id": "t1", "fields": []}, headers=bureau),
    ]
    for request in writes:
        r = await request
        assert r.status in (401, 403), (r.method, r.url, r.status, await r.text())
    assert (await client.get(f"/api/handles/{ent['prefix']}/x")).status == 404
    assert (await client.get("/api/handles/88.118.8/x")).status == 404
    enterprises = await (await client.get("/api/enterprises", headers=admin)).json()
    assert [e["status"] for e in enterprises["enterprises"]] == ["active"]


async def test_enterprise_and_anonymous_callers_are_refused_tallies(client, admin):
    a = await make_promoter(client, admin, 1)
    ent = await make_enterprise(client, admin, 1, a)
    for path in ("/api/promotion/tallies", f"/api/promotion/tallies/{a}", "/bureau", "/api/promotion/policy"):
        r = await client.get(path, params=PERIOD, headers=ent["headers"])
        assert r.status == 403, path
        assert (await r.json())["responseCode"] == 400
        r = await client.get(path, params=PERIOD)
        assert r.status == 401, path
        assert "Basic" in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2025-13-01", "to": "2026-01-01"}, "from"),
        ({"from": "2025-01-01", "to": "2025-01-01"}, "empty"),
        ({"from": "2025-01-01", "to": "2026-01-01", "mode": "generous"}, "mode"),
        ({"from": "2025-01-01", "to": "2026-01-01", "as_of": "yesterday"}, "as_of"),
        ({"from": "2025-01-01", "to": "2026-01-01", "format": "xml"}, "format"),
    ],
)
async def test_bad_tally_parameters(client, admin, params, message):
    r = await client.get("/api/promotion/tallies", params=params, headers=admin)
    assert r.status == 400
    body = await r.json()
    assert body["responseCode"] == 4 and message in body["message"]


async def test_unknown_promoter_tally_is_404(client, admin):
    r = await client.get("/api/promotion/tallies/999", params=PERIOD, headers=admin)
    assert r.status == 404 and (await r.json())["responseCode"] == 100


def test_public_key_value_type_is_a_handle_key():
    assert valuedata.KEY_TYPE_ED25519 == "Ed25519"


async def test_contribution_cap_supplied_by_the_bureau(client, admin, clock):
    a = await make_promoter(client, admin, 1)
    enterprises = [await make_enterprise(client, admin, n, a) for n in range(1, 21)]
    for ent in enterprises:
        await register(client, ent, 10_000)
    clock.now += 2 * HOUR
    report = await tally(client, admin, cap=f"{a}:150000")
    row = award_of(report, a)
    assert row["award_yuan"] == 150_000 and row["award"]["capped_by"] == "contribution_cap"
    assert report["contribution_caps_yuan"] == {str(a): 150_000}
    assert award_of(await tally(client, admin), a)["award_yuan"] == 200_000
    r = await client.get("/api/promotion/tallies", params={**PERIOD, "cap": "one:1"}, headers=admin)
    assert r.status == 400
