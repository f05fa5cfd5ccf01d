"""GS1 Digital Link on the node: enterprises' company prefixes over the admin API (who may do what),
resolution of ``/01/{gtin}…`` to the most specific existing handle, refusals as pages or JSON, CORS,
the resolver description file, and two real nodes sharing PostgreSQL and Redis.

Resolution and refusals end in the proxy's answers (``resolver.proxy.answer``: ``answer_handle``,
``answer_error``): these tests check what issue 12 fixes for them — a 302 to the handle's URL value
for a browser, the body of ``GET /api/handles/{handle}`` for ``Accept: application/json``, an error
page or the Handle JSON error — and from that, which handle a link resolved to.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_SECRET, REDIS_URL
from tests.nodeproc import NodeProcess
from tests.resolver.conftest import NODE_ADMIN, basic

GTIN = "06901234567892"  # company prefix 6901234
OTHER_GTIN = "05012345678900"  # company prefix 5012345, registered by nobody
JSON = {"Accept": "application/json"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}

# The published description-file schema of the GS1-Conformant Resolver standard 1.2.0
# (https://ref.gs1.org/standards/resolver/1.2.0/description-file-schema), the properties this node uses.
DESCRIPTION_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "resolverRoot": {"type": "string", "format": "uri"},
        "supportedPrimaryKeys": {
            "type": "array",
            "items": {
                "type": "string",
                "enum": [
                    "all",
                    "01",
                    "8006",
                    "8013",
                    "8010",
                    "410",
                    "411",
                    "412",
                    "413",
                    "414",
                    "415",
                    "417",
                    "8017",
                    "8018",
                    "255",
                    "00",
                    "253",
                    "401",
                    "402",
                    "8003",
                    "8004",
                ],
            },
        },
        "name": {"type": "string"},
        "supportedLinkType": {
            "type": "array",
            "items": {
                "properties": {
                    "namespace": {"type": "string", "format": "uri"},
                    "prefix": {"type": "string", "pattern": "^[a-zA-Z_][A-Za-z0-9_-]*?:$"},
                }
            },
        },
        "linkTypeDefaultCanBeLinkset": {"type": "boolean", "default": False},
        "jsonLdContextLocation": {"type": "string", "format": "uri"},
    },
}


def gs1_url(enterprise: str, company_prefix: str) -> str:
    return f"/api/enterprises/{enterprise}/gs1-prefixes/{company_prefix}"


async def put_url(client: TestClient, handle: str, target: str, headers: dict[str, str]) -> None:
    body = {"values": [{"index": 1, "type": "URL", "data": target}]}
    r = await client.put(f"/api/handles/{handle}", json=body, headers=headers)
    assert r.status in (200, 201), await r.text()


async def test_company_prefixes_belong_to_one_enterprise_and_its_administrators(
    client: TestClient, admin: dict[str, str], onboard: Callable[..., Any]
) -> None:
    a, b = await onboard(), await onboard()
    ours = gs1_url(a["prefix"], "6901234")

    r = await client.put(ours, headers=a["headers"])
    assert r.status == 201 and await r.json() == {
        "responseCode": 1,
        "companyPrefix": "6901234",
        "enterprise": a["prefix"],
        "created": (await r.json())["created"],
    }
    r = await client.put(ours, headers=a["headers"])
    assert r.status == 200 and (await r.json())["companyPrefix"] == "6901234"  # again: nothing changes
    r = await client.get(f"/api/enterprises/{a['prefix']}/gs1-prefixes", headers=a["headers"])
    body = await r.json()
    assert r.status == 200 and body["enterprise"] == a["prefix"]
    assert [p["companyPrefix"] for p in body["gs1Prefixes"]] == ["6901234"]

    # Another enterprise: neither the same prefix, nor a shorter or a longer one (409, responseCode 101) ...
    for taken in ("6901234", "690123", "69012345"):
        r = await client.put(gs1_url(b["prefix"], taken), headers=b["headers"])
        assert r.status == 409 and (await r.json())["responseCode"] == 101, taken
    # ... nor anything of the first enterprise's (403), nor an enterprise that does not exist (403 too).
    for method in ("GET", "PUT", "DELETE"):
        path = ours if method != "GET" else f"/api/enterprises/{a['prefix']}/gs1-prefixes"
        r = await client.request(method, path, headers=b["headers"])
        assert r.status == 403 and (await r.json())["responseCode"] == 400, method
    r = await client.get("/api/enterprises/88.118.8.9999/gs1-prefixes", headers=b["headers"])
    assert r.status == 403
    r = await client.get("/api/enterprises/88.118.8.9999/gs1-prefixes", headers=admin)
    assert r.status == 400 and "unknown enterprise" in (await r.json())["message"]
    # Anonymous callers authenticate first.
    assert (await client.get(f"/api/enterprises/{a['prefix']}/gs1-prefixes")).status == 401
    assert (await client.put(ours)).status == 401

    # Refused prefixes.
    for bad, message in (
        ("690", "a GS1 company prefix is 4 to 12 digits"),
        ("6901234567890", "a GS1 company prefix is 4 to 12 digits"),
        ("2012345", "restricted circulation"),
    ):
        r = await client.put(gs1_url(a["prefix"], bad), headers=a["headers"])
        assert r.status == 400 and message in (await r.json())["message"], bad

    # The bureau's auditor reads, never writes.
    r = await client.post("/api/auditors", json={"name": "baiyun"}, headers=admin)
    auditor = basic(f"300:{(await r.json())['identity'].split(':', 1)[1]}", (await r.json())["secret"])
    r = await client.get(f"/api/enterprises/{a['prefix']}/gs1-prefixes", headers=auditor)
    assert r.status == 200 and len((await r.json())["gs1Prefixes"]) == 1
    for method in ("PUT", "DELETE"):
        r = await client.request(method, gs1_url(a["prefix"], "6909999"), headers=auditor)
        assert r.status == 403, method

    # A disabled enterprise's prefixes are changed by the node administrator only.
    r = await client.patch(f"/api/enterprises/{b['prefix']}", json={"status": "disabled"}, headers=admin)
    assert r.status == 200
    assert (await client.put(gs1_url(b["prefix"], "5012345"), headers=b["headers"])).status == 403
    assert (await client.put(gs1_url(b["prefix"], "5012345"), headers=admin)).status == 201
    r = await client.get(f"/api/enterprises/{b['id']}/gs1-prefixes", headers=b["headers"])
    assert r.status == 200 and [p["companyPrefix"] for p in (await r.json())["gs1Prefixes"]] == ["5012345"]

    # Removing: once (then 404); afterwards the other enterprise may register it.
    r = await client.delete(ours, headers=a["headers"])
    assert r.status == 200 and await r.json() == {"responseCode": 1, "companyPrefix": "6901234", "removed": True}
    r = await client.delete(ours, headers=a["headers"])
    assert r.status == 404 and (await r.json())["responseCode"] == 100
    assert (await client.put(gs1_url(b["prefix"], "690123"), headers=admin)).status == 201


@pytest.fixture
async def product(client: TestClient, onboard: Callable[..., Any]) -> dict[str, Any]:
    """An enterprise with company prefix 6901234 and handles for GTIN 06901234567892: the product,
    batch LOT1, serial SN1 and a batch whose number holds a slash."""
    e = await onboard()
    r = await client.put(gs1_url(e["prefix"], "6901234"), headers=e["headers"])
    assert r.status == 201
    base = f"{e['prefix']}/01/{GTIN}"
    for suffix, target in (
        ("", "https://trace.example.com/product"),
        ("/10/LOT1", "https://trace.example.com/lot1"),
        ("/21/SN1", "https://trace.example.com/sn1"),
        ("/10/A%252FB", "https://trace.example.com/a-slash-b"),  # the handle …/10/A%2FB, percent-encoded once more
    ):
        await put_url(client, base + suffix, target, e["headers"])
    return e


@pytest.mark.parametrize(
    ("path", "target"),
    [
        (f"/01/{GTIN}", "product"),
        ("/01/6901234567892", "product"),  # a GTIN-13 is padded to 14 digits
        (f"/01/{GTIN}/", "product"),  # a trailing slash is tolerated
        (f"/01/{GTIN}/10/LOT1", "lot1"),
        (f"/01/{GTIN}/10/LOT2", "product"),  # an unknown batch: the product
        (f"/01/{GTIN}/21/SN1", "sn1"),
        (f"/01/{GTIN}/21/SN2", "product"),
        (f"/01/{GTIN}/10/LOT1/21/SN1", "sn1"),  # the serial names the unit, whatever the batch
        (f"/01/{GTIN}/10/LOT9/21/SN1", "sn1"),
        (f"/01/{GTIN}/10/LOT1/21/SN2", "lot1"),  # an unknown serial: its batch
        (f"/01/{GTIN}/22/V1/10/LOT1", "lot1"),  # no handle for the variant: the batch
        (f"/01/{GTIN}/22/V1", "product"),
        (f"/01/{GTIN}/235/TPX1", "product"),
        (f"/01/{GTIN}/10/A%2FB", "a-slash-b"),
        (f"/01/{GTIN}/10/A%2fB/", "a-slash-b"),
    ],
)
async def test_a_link_resolves_to_its_most_specific_existing_handle(
    client: TestClient, product: dict[str, Any], path: str, target: str
) -> None:
    r = await client.get(path, headers=BROWSER, allow_redirects=False)
    assert r.status == 302, await r.text()
    assert r.headers["Location"] == f"https://trace.example.com/{target}"
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    r = await client.head(path, allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == f"https://trace.example.com/{target}"


async def test_the_query_string_is_left_to_the_proxy(client: TestClient, product: dict[str, Any]) -> None:
    """Data attributes and ``linkType`` do not change which handle answers (the proxy may pass them on)."""
    r = await client.get(f"/01/{GTIN}/10/LOT1?17=261231&linkType=gs1:pip", headers=BROWSER, allow_redirects=False)
    assert r.status == 302 and r.headers["Location"].startswith("https://trace.example.com/lot1")


async def test_json_names_the_handle_a_link_resolved_to(client: TestClient, product: dict[str, Any]) -> None:
    base = f"{product['prefix']}/01/{GTIN}"
    for path, handle in (
        (f"/01/{GTIN}/10/LOT1/21/SN1", f"{base}/21/SN1"),
        (f"/01/{GTIN}/10/LOT1/21/SN7", f"{base}/10/LOT1"),
        (f"/01/{GTIN}/10/A%2FB", f"{base}/10/A%2FB"),
        (f"/01/{GTIN}/22/V", base),
    ):
        r = await client.get(path, headers=JSON)
        assert r.status == 200, await r.text()
        body = await r.json()
        assert body["handle"] == handle and body["responseCode"] == 1
        reference = await client.get(f"/api/handles/{quote(handle, safe='/')}")
        assert body == await reference.json()


async def test_refusals_are_pages_for_browsers_and_json_for_clients(
    client: TestClient, product: dict[str, Any]
) -> None:
    bad = "/01/06901234567890"  # wrong check digit: 2 is right
    message = "GTIN 06901234567890 has a wrong check digit: 0, expected 2"
    for headers in (BROWSER, {}, {"Accept": "*/*"}, {"Accept": "application/json;q=0.5, text/html"}):
        r = await client.get(bad, headers=headers)
        assert r.status == 400 and r.content_type == "text/html", headers
        page = await r.text()
        assert message in page and "<html" in page
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    for accept in ("application/json", "application/linkset+json", "text/html;q=0.5, application/json"):
        r = await client.get(bad, headers={"Accept": accept})
        assert r.status == 400 and await r.json() == {"responseCode": 102, "message": message}, accept
    r = await client.get(bad, headers={"Accept": "text/html", "Accept-Language": "en"})
    assert r.headers["Content-Language"] == "en" and "Vary" in r.headers

    r = await client.get(f"/01/{GTIN}/17/261231", headers=JSON)
    assert r.status == 400 and "data attributes" in (await r.json())["message"]
    r = await client.get(f"/01/{GTIN}/21/S/10/L", headers=JSON)
    assert r.status == 400 and (await r.json())["message"] == "key qualifiers go in the order 22, 10, 21"

    # A GTIN whose company prefix no enterprise registered.
    r = await client.get(f"/01/{OTHER_GTIN}", headers=JSON)
    assert r.status == 404 and await r.json() == {
        "responseCode": 100,
        "message": f"GTIN {OTHER_GTIN}: no enterprise of this node has registered its GS1 company prefix",
    }
    r = await client.get(f"/01/{OTHER_GTIN}", headers=BROWSER)
    assert r.status == 404 and r.content_type == "text/html"
    # A GTIN of the enterprise without any handle of its own.
    r = await client.get("/01/06901234000016/21/S1", headers=JSON)
    body = await r.json()
    assert r.status == 404 and body["responseCode"] == 100
    assert body["handle"] == f"{product['prefix']}/01/06901234000016/21/S1"
    assert "or any of the 1 less specific handles" in body["message"]


async def test_removing_the_company_prefix_stops_resolution(client: TestClient, product: dict[str, Any]) -> None:
    assert (await client.get(f"/01/{GTIN}", headers=JSON)).status == 200
    r = await client.delete(gs1_url(product["prefix"], "6901234"), headers=product["headers"])
    assert r.status == 200
    assert (await client.get(f"/01/{GTIN}", headers=JSON)).status == 404
    # The handles are still there.
    assert (await client.get(f"/api/handles/{product['prefix']}/01/{GTIN}")).status == 200


async def test_cors_preflight(client: TestClient) -> None:
    for path in (f"/01/{GTIN}", f"/01/{GTIN}/10/L", "/.well-known/gs1resolver"):
        r = await client.options(path, headers={"Origin": "https://app.example.com"})
        assert r.status == 204 and await r.read() == b""
        assert r.headers["Allow"] == "GET, HEAD, OPTIONS"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "GET" in r.headers["Access-Control-Allow-Methods"]


@pytest.mark.parametrize("config_overrides", [{"public_base_url": "https://id.example.com/"}])
async def test_resolver_description_file(client: TestClient) -> None:
    r = await client.get("/.well-known/gs1resolver")
    assert r.status == 200 and r.content_type == "application/json"
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    document = await r.json()
    jsonschema_rs.validator_for(DESCRIPTION_SCHEMA, validate_formats=True).validate(document)
    assert document["resolverRoot"] == "https://id.example.com"  # public_base_url
    assert document["supportedPrimaryKeys"] == ["01"]
    assert document["linkTypeDefaultCanBeLinkset"] is False
    assert document["supportedLinkType"] == [{"namespace": "https://gs1.org/voc/", "prefix": "gs1:"}]
    assert "88.118.8" in document["name"] and "工业互联网标识解析二级节点" in document["name"]
    assert document["jsonLdContextLocation"] == "https://ref.gs1.org/standards/resolver/linkset-context"


# -- two real nodes -------------------------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def call(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with _opener.open(request, timeout=30) as reply:
            status, text, location = reply.status, reply.read(), reply.headers.get("Location")
    except urllib.error.HTTPError as exc:
        status, text, location = exc.code, exc.read(), exc.headers.get("Location")
    if status == 302:
        return status, location
    return status, json.loads(text) if text else None


@pytest.fixture
def two_nodes(tmp_path, pg_store_url, redis_prefix):  # type: ignore[no-untyped-def]
    args = ("--store", pg_store_url, "--redis", REDIS_URL, "--redis-key-prefix", redis_prefix)
    a = NodeProcess(tmp_path / "a", *args)
    b = NodeProcess(tmp_path / "b", *args)
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_two_nodes_resolve_what_either_registered_at_once(two_nodes) -> None:  # type: ignore[no-untyped-def]
    """Two ``idnode serve`` on one PostgreSQL and Redis: a company prefix and handles registered
    through one node resolve on the other at once, a batch added later too, and a removed prefix
    stops resolving there at once (no copy of the prefixes is kept in a process)."""
    a, b = two_nodes
    admin = basic(NODE_ADMIN, ADMIN_SECRET)
    status, _ = call(f"{a.url}/api/promoters", "POST", {"name": "P", "uscc": "91350100M000100Y43"}, admin)
    assert status == 201
    status, e = call(
        f"{a.url}/api/enterprises", "POST", {"name": "E", "uscc": "91440300708461136T", "promoter": 1}, admin
    )
    assert status == 201
    owner = basic(e["admin"], e["secret"])
    assert call(f"{a.url}{gs1_url(e['prefix'], '6901234')}", "PUT", headers=owner)[0] == 201
    product = {"values": [{"index": 1, "type": "URL", "data": "https://trace.example.com/product"}]}
    assert call(f"{a.url}/api/handles/{e['prefix']}/01/{GTIN}", "PUT", product, owner)[0] == 201

    assert call(f"{b.url}/01/{GTIN}/10/LOT1") == (302, "https://trace.example.com/product")
    lot = {"values": [{"index": 1, "type": "URL", "data": "https://trace.example.com/lot1"}]}
    assert call(f"{a.url}/api/handles/{e['prefix']}/01/{GTIN}/10/LOT1", "PUT", lot, owner)[0] == 201
    assert call(f"{b.url}/01/{GTIN}/10/LOT1") == (302, "https://trace.example.com/lot1")

    status, listed = call(f"{b.url}/api/enterprises/{e['prefix']}/gs1-prefixes", headers=owner)
    assert status == 200 and [p["companyPrefix"] for p in listed["gs1Prefixes"]] == ["6901234"]
    assert call(f"{b.url}{gs1_url(e['prefix'], '6901234')}", "DELETE", headers=owner)[0] == 200
    status, body = call(f"{a.url}/01/{GTIN}/10/LOT1", headers=JSON)
    assert status == 404 and body["responseCode"] == 100

    status, description = call(f"{b.url}/.well-known/gs1resolver")
    assert status == 200 and description["resolverRoot"] == b.url


async def test_link_type_chooses_the_link_to_redirect_to(client: TestClient, product: dict[str, Any]) -> None:
    """GS1's ``linkType``: the link of that type (``gs1:pip``, its URI under any of GS1's names, or another
    relation), in the language asked for when there are several; the default link when there is none of
    that type; the whole linkset for ``linkType=linkset`` (or ``all``), whatever ``Accept`` says."""
    locations = (
        "<locations>"
        '<location href="https://trace.example.com/pip-zh" rel="gs1:pip" hreflang="zh" />'
        '<location href="https://trace.example.com/pip-en" rel="gs1:pip" hreflang="en" weight="0" />'
        '<location href="https://trace.example.com/leaflet" rel="gs1:epil" weight="0" />'
        "</locations>"
    )
    values = [
        {"index": 1, "type": "URL", "data": "https://trace.example.com/product"},
        {"index": 2, "type": "10320/loc", "data": locations},
    ]
    r = await client.put(
        f"/api/handles/{product['prefix']}/01/{GTIN}", json={"values": values}, headers=product["headers"]
    )
    assert r.status in (200, 201), await r.text()

    async def location(query: str, **headers: str) -> str:
        r = await client.get(f"/01/{GTIN}?{query}", headers={**BROWSER, **headers}, allow_redirects=False)
        assert r.status == 302, await r.text()
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        return r.headers["Location"].removeprefix("https://trace.example.com/")

    assert await location("linkType=gs1:pip", **{"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}) == "pip-zh"
    assert await location("linkType=gs1:pip", **{"Accept-Language": "en-GB, zh;q=0.5"}) == "pip-en"
    assert await location("linkType=gs1:pip", **{"Accept-Language": "fr"}) == "pip-zh"  # none in French: the first
    assert await location("linkType=https://gs1.org/voc/epil") == "leaflet"
    assert await location("linkType=https%3A%2F%2Fref.gs1.org%2Fvoc%2Fepil") == "leaflet"
    # None of that type, or no link relation at all: what a plain request gets (here the weighted
    # 10320/loc location, as HANDLE.NET chooses it).
    plain = await location("17=261231")
    assert plain == "pip-zh"
    for other in ("linkType=gs1:recipeInfo", "linkType=no such thing", "linkType=gs1:"):
        assert await location(other) == plain, other
    for everything in ("linkset", "all"):
        r = await client.get(f"/01/{GTIN}?linkType={everything}", headers=BROWSER)
        assert r.status == 200 and r.content_type == "application/linkset+json", everything
        (context,) = (await r.json())["linkset"]
        assert {t["href"] for t in context["https://gs1.org/voc/pip"]} == {
            "https://trace.example.com/pip-zh",
            "https://trace.example.com/pip-en",
        }
    r = await client.get(f"/01/{GTIN}?linkType=gs1:pip&noredirect", headers=BROWSER)
    assert r.status == 200 and r.content_type == "text/html"  # noredirect: the landing page
    r = await client.get(f"/01/{GTIN}?linkType=" + "x" * 501, headers=JSON)
    assert r.status == 200  # JSON clients get the record; linkType is for browsers and linksets
    r = await client.get(f"/01/{GTIN}?linkType=" + "x" * 501, headers=BROWSER)
    assert r.status == 400 and "linkType is at most 500 characters" in await r.text()
    # A handle's own URL takes it too.
    r = await client.get(
        f"/{product['prefix']}/01/{GTIN}?linkType=gs1:pip",
        headers={**BROWSER, "Accept-Language": "en"},
        allow_redirects=False,
    )
    assert r.status == 302 and r.headers["Location"] == "https://trace.example.com/pip-en"
