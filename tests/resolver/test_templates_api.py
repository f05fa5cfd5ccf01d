"""``/api/templates`` over HTTP on both stores: who may write templates, versions, node-wide and
per-enterprise templates, and validation of single PUTs and batches against them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.resolver.conftest import basic


@pytest.fixture(params=["sqlite", "postgresql"])
def config_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "postgresql":
        return {"store": request.getfixturevalue("pg_store_url")}
    return {}


FIELDS = [
    {"index": 2001, "name": "model", "type": "MODEL", "required": True, "min_length": 2, "max_length": 8},
    {"index": 2002, "name": "batch", "type": "BATCH", "pattern": "B[0-9]{4}"},
    {"index": 2003, "name": "colour", "type": "COLOUR", "enum": ["red", "green"]},
]


async def call(
    client: TestClient, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None, **params: str
) -> tuple[int, dict[str, Any]]:
    r = await client.request(method, path, json=body, headers=headers or {}, params=params)
    text = await r.text()
    assert r.status < 500, text
    assert r.content_type == "application/json", text
    return r.status, json.loads(text)


async def create(client: TestClient, headers: dict[str, str], ident: str = "sku", fields: Any = None, **extra: Any):
    return await call(client, "POST", "/api/templates", headers, {"id": ident, "fields": fields or FIELDS, **extra})


def values(ref: str | None = "sku@1", **fields: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"index": 1, "type": "URL", "data": "https://example.com/x"}]
    if ref is not None:
        out.append({"index": 1001, "type": "TEMPLATE", "data": ref})
    known = {"model": (2001, "MODEL"), "batch": (2002, "BATCH"), "colour": (2003, "COLOUR"), "lot": (2004, "LOT")}
    for name, data in fields.items():
        index, type_ = known[name] if name in known else (int(name.lstrip("i")), "EXTRA")
        out.append({"index": index, "type": type_, "data": data})
    return out


async def put(client: TestClient, handle: str, headers: dict[str, str], vals: list[dict[str, Any]]):
    return await call(client, "PUT", f"/api/handles/{handle}", headers, {"values": vals})


async def batch(client: TestClient, headers: dict[str, str], items: list[dict[str, Any]], **params: str):
    body = b"".join(json.dumps(i).encode() + b"\n" for i in items)
    r = await client.post(
        "/api/handles", data=body, headers={**headers, "Content-Type": "application/x-ndjson"}, params=params
    )
    assert r.status < 500, await r.text()
    return r.status, await r.json()


@pytest.fixture
async def ent(onboard: Callable[..., Any]) -> dict[str, Any]:
    return await onboard()


@pytest.fixture
async def auditor(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    status, reply = await call(client, "POST", "/api/auditors", admin, {"name": "bureau"})
    assert status == 201, reply
    return basic(reply["identity"], reply["secret"])


# -- create, version, read ------------------------------------------------------------------------
async def test_create_version_and_read(client, admin):
    status, t = await create(client, admin, description="产品基本信息")
    assert status == 201, t
    assert (t["responseCode"], t["id"], t["version"], t["scope"]) == (1, "sku", 1, "node")
    assert [f["index"] for f in t["fields"]] == [2001, 2002, 2003]

    status, reply = await create(client, admin)
    assert status == 409, reply  # POST creates; PUT adds versions

    v2_fields = [*FIELDS, {"index": 2004, "name": "lot", "type": "LOT"}]
    status, t2 = await call(client, "PUT", "/api/templates/sku", admin, {"fields": v2_fields})
    assert (status, t2["version"]) == (201, 2), t2

    dropped = [f for f in v2_fields if f["name"] != "batch"]
    status, reply = await call(client, "PUT", "/api/templates/sku", admin, {"fields": dropped})
    assert status == 400 and "disabled but not deleted" in reply["message"], reply

    disabled = [{**f, "disabled": True} if f["name"] == "batch" else f for f in v2_fields]
    status, t3 = await call(client, "PUT", "/api/templates/sku", admin, {"fields": disabled})
    assert (status, t3["version"]) == (201, 3), t3

    status, latest = await call(client, "GET", "/api/templates/sku")  # templates are public
    assert (status, latest["version"]) == (200, 3)
    assert {f["name"]: f["disabled"] for f in latest["fields"]}["batch"] is True
    status, first = await call(client, "GET", "/api/templates/sku", version="1")
    assert (status, first["version"], len(first["fields"])) == (200, 1, 3)
    assert first["description"] == "产品基本信息"
    for bad in ("abc", "-1", "1.0", "²", "", "99999999999999999999"):
        status, reply = await call(client, "GET", "/api/templates/sku", version=bad)
        assert status == 400, (bad, reply)
    status, _ = await call(client, "GET", "/api/templates/sku", version="9")
    assert status == 404
    status, _ = await call(client, "GET", "/api/templates/nope")
    assert status == 404

    status, listing = await call(client, "GET", "/api/templates")
    assert status == 200
    assert [(t["id"], t["version"], t["scope"]) for t in listing["templates"]] == [
        ("sku", 1, "node"),
        ("sku", 2, "node"),
        ("sku", 3, "node"),
    ]


async def test_put_of_an_unknown_template_is_404(client, admin):
    status, reply = await call(client, "PUT", "/api/templates/nope", admin, {"fields": FIELDS})
    assert status == 404, reply


@pytest.mark.parametrize(
    "body",
    [
        {"id": "sku", "fields": [{"index": 1999, "name": "m", "type": "M"}]},
        {"id": "sku", "fields": [{"index": 2001, "name": "m", "type": "M", "pattern": "("}]},
        {"id": "sku", "fields": []},
        {"id": "bad id", "fields": FIELDS},
        {"id": 5, "fields": FIELDS},
        {"fields": FIELDS},
        {"id": "sku", "fields": FIELDS, "prefix": 5},
        {"id": "sku", "fields": FIELDS, "prefix": "88.118.8.4242"},  # no such enterprise
        [1, 2],
    ],
)
async def test_bad_template_bodies(client, admin, body):
    status, reply = await call(client, "POST", "/api/templates", admin, body)
    assert status == 400, reply
    assert reply["responseCode"] == 4


async def test_a_body_that_is_not_json(client, admin):
    r = await client.post("/api/templates", data=b"{not json", headers={**admin, "Content-Type": "application/json"})
    assert r.status == 400
    r = await client.post("/api/templates", data=b"{}", headers={**admin, "Content-Type": "text/plain"})
    assert r.status == 400


# -- who may write templates ----------------------------------------------------------------------
async def test_who_may_write_templates(client, admin, onboard, auditor):
    a, b = await onboard(), await onboard()
    status, _ = await create(client, {}, "anon")
    assert status == 401
    status, _ = await create(client, a["headers"], "ent-node-wide")
    assert status == 403  # node-wide templates are the node admin's
    status, _ = await create(client, auditor, "aud")
    assert status == 403
    status, _ = await create(client, auditor, "aud", prefix=a["prefix"])
    assert status == 403
    status, _ = await create(client, b["headers"], "other", prefix=a["prefix"])
    assert status == 403  # not b's prefix

    status, own = await create(client, a["headers"], "sku", prefix=a["prefix"])
    assert (status, own["scope"], own["version"]) == (201, a["prefix"], 1), own
    status, reply = await call(
        client, "PUT", "/api/templates/sku", b["headers"], {"fields": FIELDS}, prefix=a["prefix"]
    )
    assert status == 403, reply
    status, reply = await call(client, "PUT", "/api/templates/sku", auditor, {"fields": FIELDS}, prefix=a["prefix"])
    assert status == 403, reply
    status, v2 = await call(
        client, "PUT", "/api/templates/sku", a["headers"], {"fields": FIELDS, "prefix": a["prefix"]}
    )
    assert (status, v2["version"]) == (201, 2), v2
    status, v3 = await call(client, "PUT", "/api/templates/sku", admin, {"fields": FIELDS}, prefix=a["prefix"])
    assert (status, v3["version"]) == (201, 3), v3  # the node admin may write an enterprise's template

    status, node = await create(client, admin, "sku")  # the same id node-wide is another template
    assert (status, node["scope"], node["version"]) == (201, "node", 1)
    status, reply = await call(client, "GET", "/api/templates/sku", prefix=a["prefix"])
    assert (status, reply["version"], reply["scope"]) == (200, 3, a["prefix"])
    status, reply = await call(client, "GET", "/api/templates/sku", prefix=a["prefix"].upper())
    assert status == 200
    status, reply = await call(client, "GET", "/api/templates/sku")
    assert (status, reply["scope"]) == (200, "node")
    status, _ = await call(client, "GET", "/api/templates/sku", prefix=b["prefix"])
    assert status == 404
    status, listing = await call(client, "GET", "/api/templates")
    assert len(listing["templates"]) == 4


# -- validation of single writes ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("vals", "words"),
    [
        (values(), "required field 'model'"),
        (values(model="M"), "shorter than 2"),
        (values(model="M" * 9), "longer than 8"),
        (values(model="M100", batch="X1"), "does not match"),
        (values(model="M100", colour="blue"), "one of red, green"),
        (values(model="M100", i2500="?"), "index 2500 is not a field"),
        (values("sku@7", model="M100"), "no template sku@7"),
        (values("nope@1", model="M100"), "no template nope@1"),
        (values("sku", model="M100"), "<id>@<version>"),
        (values("sku@1@2", model="M100"), "<id>@<version>"),
        (values("sku@²", model="M100"), "<id>@<version>"),
        (values("sku@99999999999999999999", model="M100"), "<id>@<version>"),
        ([{"index": 1001, "type": "URL", "data": "sku@1"}], "reserved"),
        (
            [{"index": 1001, "type": "TEMPLATE", "data": "sku@1"}, {"index": 2001, "type": "URL", "data": "M100"}],
            "must have type MODEL",
        ),
    ],
)
async def test_single_put_is_validated_against_the_template(client, admin, ent, vals, words):
    assert (await create(client, admin))[0] == 201
    status, reply = await put(client, f"{ent['prefix']}/p-1", ent["headers"], vals)
    assert status == 400, reply
    assert reply["responseCode"] == 202 and words in reply["message"], reply
    r = await client.get(f"/api/handles/{ent['prefix']}/p-1", params={"auth": "true"})
    assert r.status == 404


async def test_single_put_passes_and_disabled_fields(client, admin, ent):
    assert (await create(client, admin))[0] == 201
    p = ent["prefix"]
    status, _ = await put(client, f"{p}/ok", ent["headers"], values(model="M100", batch="B0001", colour="red"))
    assert status == 201
    status, _ = await put(client, f"{p}/no-ref", ent["headers"], values(None, i2500="free"))
    assert status == 201  # no reference, no template
    disabled = [{**f, "disabled": True} if f["name"] == "batch" else f for f in FIELDS]
    assert (await call(client, "PUT", "/api/templates/sku", admin, {"fields": disabled}))[0] == 201
    status, reply = await put(client, f"{p}/v2", ent["headers"], values("sku@2", model="M100", batch="B0001"))
    assert status == 400 and "disabled" in reply["message"], reply
    status, _ = await put(client, f"{p}/v2", ent["headers"], values("sku@2", model="M100"))
    assert status == 201
    status, _ = await put(client, f"{p}/v1", ent["headers"], values("sku@1", model="M100", batch="B0001"))
    assert status == 201  # version 1 is unchanged
    # Adding a value with ?index= is checked against the template too.
    r = await client.put(
        f"/api/handles/{p}/ok",
        params={"index": "2003"},
        json={"values": [{"index": 2003, "type": "COLOUR", "data": "purple"}]},
        headers=ent["headers"],
    )
    assert r.status == 400, await r.text()


async def test_the_enterprises_own_template_wins(client, admin, onboard):
    a, b = await onboard(), await onboard()
    assert (await create(client, admin))[0] == 201  # node-wide sku@1: model required
    own = [{"index": 2004, "name": "lot", "type": "LOT", "required": True}]
    assert (await create(client, a["headers"], fields=own, prefix=a["prefix"]))[0] == 201
    status, reply = await put(client, f"{a['prefix']}/x", a["headers"], values(lot="L1"))
    assert status == 201, reply
    status, reply = await put(client, f"{a['prefix']}/y", a["headers"], values(model="M100"))
    assert status == 400 and "lot" in reply["message"], reply
    status, reply = await put(client, f"{b['prefix']}/x", b["headers"], values(lot="L1"))
    assert status == 400 and "model" in reply["message"], reply
    status, reply = await put(client, f"{b['prefix']}/y", b["headers"], values(model="M100"))
    assert status == 201, reply
    # An enterprise template of another id does not hide node-wide ones.
    assert (await create(client, admin, "other", fields=own))[0] == 201
    status, reply = await put(client, f"{a['prefix']}/z", a["headers"], values("other@1"))
    assert status == 400 and "lot" in reply["message"]


async def test_an_enterprise_template_created_later_wins_too(client, admin, ent):
    assert (await create(client, admin))[0] == 201
    p = ent["prefix"]
    assert (await put(client, f"{p}/before", ent["headers"], values(model="M100")))[0] == 201
    own = [{"index": 2004, "name": "lot", "type": "LOT", "required": True}]
    assert (await create(client, ent["headers"], fields=own, prefix=p))[0] == 201
    status, reply = await put(client, f"{p}/after", ent["headers"], values(lot="L1"))
    assert status == 201, reply


# -- validation in batches -----------------------------------------------------------------------------
async def test_batches_are_validated_against_templates(client, admin, onboard):
    a, b = await onboard(), await onboard()
    assert (await create(client, admin))[0] == 201
    own = [{"index": 2004, "name": "lot", "type": "LOT", "required": True, "pattern": "L[0-9]+"}]
    assert (await create(client, a["headers"], fields=own, prefix=a["prefix"]))[0] == 201
    items = [
        {"handle": f"{a['prefix']}/b0", "values": values(lot="L1")},
        {"handle": f"{a['prefix']}/b1", "values": values(lot="X")},
        {"handle": f"{a['prefix']}/b2", "values": values(model="M100")},
        {"handle": f"{a['prefix']}/b3", "values": values("sku@x", lot="L1")},
        {"handle": f"{a['prefix']}/b4", "values": values("sku@2", lot="L1")},
        {"handle": f"{a['prefix']}/b5", "values": values(lot="L2", i3000="?")},
    ]
    status, reply = await batch(client, a["headers"], items)
    assert status == 400, reply
    fails = {f["position"]: f for f in reply["failures"]}
    assert sorted(fails) == [1, 2, 3, 4, 5]
    assert all(f["responseCode"] == 202 for f in fails.values())
    assert "does not match" in fails[1]["message"] and "lot" in fails[2]["message"]
    assert "index 3000" in fails[5]["message"]

    status, reply = await batch(client, a["headers"], items, atomic="false")
    assert (status, reply["created"], reply["failed"]) == (201, 1, 5), reply

    # Under b's prefix the node-wide sku@1 applies, and the node admin's batches are checked too.
    items_b = [
        {"handle": f"{b['prefix']}/n0", "values": values(model="M100")},
        {"handle": f"{b['prefix']}/n1", "values": values(lot="L1")},
    ]
    status, reply = await batch(client, admin, items_b)
    assert status == 400 and [f["position"] for f in reply["failures"]] == [1], reply
