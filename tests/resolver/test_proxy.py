"""A handle's URL on the node, as the HANDLE.NET and DOI proxies answer it: redirects and their
parameters, ``10320/loc`` and ``HS_ALIAS``, content negotiation, pages and errors, paths, the home
page, and the rule that nothing a caller may not read is shown, linked or redirected to. A real app
on a real SQLite store behind a real socket (aiohttp's test server)."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any
from urllib.parse import quote

from aiohttp.test_utils import TestClient

from registry.model import HandleValue, normalise_prefix
from registry.read_policy import public_values
from registry.stores.base import HandleWrite
from resolver.http.keys import STATE_KEY
from resolver.http.public_url import handle_path
from resolver.native.codec import ResolutionRequest, encode_message, make_request
from resolver.native.http import HDL_MIME_TYPE
from resolver.proxy.answer import PROXY_KEY
from resolver.proxy.linkset import DEFAULT_LINK
from tests.resolver.proxy_data import (
    CHANGED,
    ENTERPRISE_NAME,
    MANUAL,
    PRODUCT_PAGE,
    SECRET_QC,
    SECRET_URL,
    TRACE_PAGE,
    Node,
    node,  # noqa: F401 (fixture)
)

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
JSON_ACCEPT = {"Accept": "application/json"}
LINKSET_ACCEPT = {"Accept": "application/linkset+json"}


async def _get(client: TestClient, path: str, **headers: str):  # type: ignore[no-untyped-def]
    return await client.get(path, headers=headers, allow_redirects=False)


async def _location(at: Node, path: str, **headers: str) -> str:
    r = await _get(at.client, path, **headers)
    assert r.status == 302, (path, r.status, await r.text())
    assert r.headers["Vary"] == "Accept"
    return r.headers["Location"]


def _html_text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


# ---------------------------------------------------------------------------------------- redirects


async def test_redirects_to_the_url_value_with_the_lowest_index(node: Node) -> None:  # noqa: F811
    assert await _location(node, node.path()) == PRODUCT_PAGE
    assert await _location(node, node.path(), Accept=BROWSER) == PRODUCT_PAGE
    # Unsafe URL values are never a target: the next URL value is; URL before its subtypes.
    handle = f"{node.prefix}/unsafe"
    await node.put(
        handle,
        [
            {"index": 1, "type": "URL", "data": "javascript:alert(document.cookie)"},
            {"index": 2, "type": "URL.manual", "data": "https://example.com/manual"},
            {"index": 3, "type": "URL", "data": "data:text/html,<script>1</script>"},
            {"index": 4, "type": "URL", "data": " https://example.com/产品 1?x=1 "},
        ],
    )
    assert await _location(node, node.path(handle)) == "https://example.com/%E4%BA%A7%E5%93%81%201?x=1"
    page = await (await _get(node.client, node.path(handle) + "?noredirect")).text()
    assert "javascript:" not in page and "data:text" not in page
    # No URL value at all: the landing page.
    await node.put(handle, [{"index": 1, "type": "URL", "data": "javascript:alert(1)"}])
    r = await _get(node.client, node.path(handle))
    assert r.status == 200 and r.content_type == "text/html"
    assert 'href="javascript' not in await r.text()


async def test_index_type_urlappend_noredirect_and_auth(node: Node) -> None:  # noqa: F811
    path = node.path()
    assert await _location(node, path + "?index=2010") == TRACE_PAGE
    assert await _location(node, path + "?type=URL") == PRODUCT_PAGE
    assert await _location(node, path + "?type=url&index=2011") == quote(MANUAL, safe=":/")  # index wins
    # index or type naming no URL: the landing page, as HANDLE.NET's proxy shows the values.
    for query in ("?index=2001", "?index=99", "?type=EMAIL", "?type=NOTHING"):
        r = await _get(node.client, path + query)
        assert r.status == 200 and r.content_type == "text/html", query
    # urlappend as the DOI proxy does it, never to another host.
    assert await _location(node, path + "?urlappend=%3Fref%3Dqr%26lang%3Dzh") == PRODUCT_PAGE + "?ref=qr&lang=zh"
    assert await _location(node, path + "?urlappend=/specs") == PRODUCT_PAGE + "/specs"
    bare = f"{node.prefix}/bare-host"
    await node.put(bare, [{"index": 1, "type": "URL", "data": "https://www.baiyun-tools.example.cn"}])
    for where, bad in (
        (path, "%0D%0ASet-Cookie:x=1"),
        (node.path(bare), "@evil.example/"),
        (node.path(bare), ":8443/x"),
    ):
        r = await _get(node.client, where + "?urlappend=" + quote(bad, safe="%"))
        assert r.status == 400 and r.content_type == "text/html", bad
        assert "Location" not in r.headers
    assert await _location(node, node.path(bare) + "?urlappend=/x@y") == "https://www.baiyun-tools.example.cn/x@y"
    r = await _get(node.client, path + "?index=x")
    assert r.status == 400 and "index" in await r.text()
    r = await _get(node.client, path + "?index=x", **JSON_ACCEPT)
    assert r.status == 400 and (await r.json())["responseCode"] == 4
    # noredirect: the page, even with a URL value.
    r = await _get(node.client, path + "?noredirect")
    assert r.status == 200 and ENTERPRISE_NAME in await r.text()
    # auth: the store, not the caches. A write behind the node's back (another process) is seen only so.
    state = node.client.server.app[STATE_KEY]
    registry = state.registry
    assert registry is not None
    record = await registry.read_record(registry.parse(node.handle).key)
    assert record is not None
    moved = tuple(
        HandleValue(v.index, v.type, b"https://new.example.com/sd-200", timestamp=v.timestamp) if v.index == 1 else v
        for v in record.values
    )
    key = registry.parse(node.handle).key
    write = HandleWrite(key, node.handle, normalise_prefix(node.prefix), moved, record.version)
    [result] = await registry.store.write([write], now=CHANGED)
    assert result.ok
    assert await _location(node, path) == PRODUCT_PAGE  # the local cache tier still holds the old record
    assert await _location(node, path + "?auth") == "https://new.example.com/sd-200"
    assert await _location(node, path + "?auth=false") == PRODUCT_PAGE


LOCATIONS = """<locations chooseby="locatt,weighted">
  <location href="https://cn.example.com/p/1" weight="1" view="desktop" country="cn" />
  <location href="https://m.example.com/p/1" weight="0" view="mobile" />
  <location href_template="https://mirror.example.com/resolve?id={hdl}" weight="0" view="mirror" />
  <location href="javascript:alert(1)" weight="100" view="evil" />
</locations>"""


async def test_multiple_locations_with_weights_and_attributes(node: Node) -> None:  # noqa: F811
    handle = f"{node.prefix}/LOC 1"
    await node.put(
        handle,
        [
            {"index": 1, "type": "URL", "data": "https://legacy.example.com/p/1"},
            {"index": 2, "type": "10320/loc", "data": LOCATIONS},
        ],
    )
    path = node.path(handle)
    # The only location of weight > 0, every time (the javascript: one was dropped when parsed).
    assert {await _location(node, path) for _ in range(20)} == {"https://cn.example.com/p/1"}
    assert await _location(node, path + "?locatt=view:mobile") == "https://m.example.com/p/1"
    mirror = "https://mirror.example.com/resolve?id=" + quote(quote(handle, safe=""), safe="%")
    assert await _location(node, path + "?locatt=view:mirror") == mirror
    # No location matches: locatt is ignored, as HANDLE.NET's proxy does.
    assert await _location(node, path + "?locatt=view:evil") == "https://cn.example.com/p/1"
    # index= names the plain URL value.
    assert await _location(node, path + "?index=1") == "https://legacy.example.com/p/1"
    # Weighted choice among several: every location of weight > 0 is reached, none of weight 0.
    weighted = """<locations><location href="https://a.example.com/" weight="1"/>
        <location href="https://b.example.com/" weight="3"/>
        <location href="https://c.example.com/" weight="0"/></locations>"""
    await node.put(handle, [{"index": 2, "type": "10320/loc", "data": weighted}])
    seen = {await _location(node, path) for _ in range(60)}
    assert seen == {"https://a.example.com/", "https://b.example.com/"}
    # A document the node refuses (a DTD: entity expansion) is no location at all.
    bomb = '<!DOCTYPE l [<!ENTITY a "aaaaaaaa">]><locations><location href="https://x.example.com/&a;"/></locations>'
    await node.put(handle, [{"index": 2, "type": "10320/loc", "data": bomb}])
    assert (await _get(node.client, path)).status == 200
    # Linkset: every location, with its relation.
    rel = '<locations><location href="https://x.example.com/t" rel="gs1:traceability" title="Trace"/></locations>'
    await node.put(handle, [{"index": 2, "type": "10320/loc", "data": rel}])
    document = await (await _get(node.client, path, **LINKSET_ACCEPT)).json()
    (context,) = document["linkset"]
    assert context["https://gs1.org/voc/traceability"] == [{"href": "https://x.example.com/t", "title": "Trace"}]
    assert context[DEFAULT_LINK] == [{"href": "https://x.example.com/t"}]


async def test_aliases_are_followed_within_bounds(node: Node) -> None:  # noqa: F811
    a, b, c = (f"{node.prefix}/alias-{n}" for n in "abc")
    await node.put(a, [{"index": 1, "type": "HS_ALIAS", "data": b}])
    await node.put(b, [{"index": 1, "type": "HS_ALIAS", "data": node.handle}])
    assert await _location(node, node.path(a)) == PRODUCT_PAGE
    r = await _get(node.client, node.path(a) + "?noredirect")
    page = await r.text()
    assert r.status == 200 and ENTERPRISE_NAME in page and "智能电动螺丝刀" in page
    assert a in _html_text(page)  # "you asked for …, an alias of this identifier"
    # ignore_aliases: the alias itself (no URL: its page).
    r = await _get(node.client, node.path(a) + "?ignore_aliases")
    assert r.status == 200 and "智能电动螺丝刀" not in await r.text()
    # JSON is the alias's own record, as /api/handles has it.
    r = await _get(node.client, node.path(a), **JSON_ACCEPT)
    assert (await r.json())["values"][0]["type"] == "HS_ALIAS"
    # A loop: 404, responseCode 6, as a page and as JSON.
    await node.put(c, [{"index": 1, "type": "HS_ALIAS", "data": a}])
    await node.put(b, [{"index": 1, "type": "HS_ALIAS", "data": c}])
    r = await _get(node.client, node.path(a))
    assert r.status == 404 and r.content_type == "text/html"
    assert "loop" in await r.text()
    r = await _get(node.client, node.path(a), **LINKSET_ACCEPT)
    assert r.status == 404 and (await r.json())["responseCode"] == 6
    # A chain longer than the node follows.
    chain = [f"{node.prefix}/chain-{n}" for n in range(12)]
    for here, there in itertools.pairwise(chain):
        await node.put(here, [{"index": 1, "type": "HS_ALIAS", "data": there}])
    await node.put(chain[-1], [{"index": 1, "type": "URL", "data": "https://end.example.com/"}])
    assert (await _get(node.client, node.path(chain[0]))).status == 404
    assert await _location(node, node.path(chain[-9])) == "https://end.example.com/"  # 8 hops
    # An alias to another node's identifier: shown, not followed.
    await node.put(a, [{"index": 1, "type": "HS_ALIAS", "data": "86.100.1/X"}])
    r = await _get(node.client, node.path(a))
    assert r.status == 200 and "86.100.1/X" in await r.text()
    # An alias to nothing registered.
    await node.put(a, [{"index": 1, "type": "HS_ALIAS", "data": f"{node.prefix}/gone"}])
    assert (await _get(node.client, node.path(a))).status == 404


# ---------------------------------------------------------------------------------------- who sees what


async def test_values_the_caller_may_not_read_are_never_shown_linked_or_followed(node: Node) -> None:  # noqa: F811
    client = node.client
    page = await (await _get(client, node.path() + "?noredirect")).text()
    assert SECRET_QC not in page and SECRET_URL not in page and "QC_RESULT" not in page
    # index=2 names the private URL: anonymous callers get the page, not the private target.
    r = await _get(client, node.path() + "?index=2")
    assert r.status == 200 and SECRET_URL not in await r.text()
    linkset = await (await _get(client, node.path(), **LINKSET_ACCEPT)).text()
    assert SECRET_URL not in linkset
    # Only a private URL value: no redirect for anonymous callers, but for the owner.
    handle = f"{node.prefix}/private"
    await node.put(
        handle,
        [
            {"index": 1, "type": "URL", "data": SECRET_URL, "permissions": "1100"},
            {"index": 2, "type": "HS_ALIAS", "data": node.handle, "permissions": "1100"},
            {"index": 3, "type": "DESC", "data": "公开说明"},
        ],
    )
    r = await _get(client, node.path(handle))
    text = await r.text()
    assert r.status == 200 and SECRET_URL not in text and "公开说明" in text  # the private alias is not followed
    assert ENTERPRISE_NAME in text  # the enterprise that registered it (from onboarding) is public
    assert (await (await _get(client, node.path(handle), **LINKSET_ACCEPT)).json()) == {"linkset": []}
    # The owner's credentials read it: redirect to the private URL, a private page not kept in memos.
    assert await _location(node, node.path(handle) + "?ignore_aliases", **node.owner) == SECRET_URL
    r = await _get(client, node.path(handle) + "?noredirect&ignore_aliases", **node.owner)
    assert r.status == 200 and SECRET_URL in await r.text() and r.headers["Cache-Control"] == "private, no-store"
    r = await _get(client, node.path() + "?noredirect", **node.owner)
    assert SECRET_QC in await r.text()
    # … and anonymous callers still get the public page afterwards.
    r = await _get(client, node.path() + "?noredirect")
    assert SECRET_QC not in await r.text() and "Cache-Control" not in r.headers
    # Wrong credentials: 401 with the challenges, as a page for a browser.
    r = await _get(client, node.path(), Authorization="Basic " + "eDp5", Accept=BROWSER)
    assert r.status == 401 and r.content_type == "text/html"
    assert any(v.startswith("Basic") for v in r.headers.getall("WWW-Authenticate"))


# ---------------------------------------------------------------------------------------- negotiation


async def test_json_is_exactly_what_the_rest_api_answers(node: Node) -> None:  # noqa: F811
    client = node.client
    for query in ("", "?type=URL", "?index=1&index=2001", "?pretty", "?callback=show"):
        api = await _get(client, "/api/handles/" + quote(node.handle, safe="/") + query)
        for accept in ("application/json", "application/json, text/plain, */*", "application/*"):
            web = await _get(client, node.path() + query, Accept=accept)
            assert web.status == api.status == 200
            assert await web.read() == await api.read(), (query, accept)
            assert web.headers["Content-Type"] == api.headers["Content-Type"]
            assert web.headers["Vary"] == "Accept"
    api = await _get(client, "/api/handles/" + quote(node.handle, safe="/"), **node.owner)
    web = await _get(client, node.path(), **{**JSON_ACCEPT, **node.owner})
    assert await web.read() == await api.read() and SECRET_QC in await web.text()
    # Quality values and specificity decide; anything else is for people.
    assert (await _get(client, node.path(), Accept="text/html;q=0.5, application/json")).status == 200
    assert (await _get(client, node.path(), Accept="application/json;q=0.5, text/html")).status == 302
    assert (await _get(client, node.path(), Accept="application/json;q=0, */*")).status == 302
    assert (await _get(client, node.path(), Accept="text/plain")).status == 302
    assert (await _get(client, node.path(), Accept="garbage")).status == 302
    assert (await _get(client, node.path())).status == 302


async def test_linkset_of_the_url_values_and_template_fields(node: Node) -> None:  # noqa: F811
    r = await _get(node.client, node.path(), Accept="application/linkset+json")
    assert r.status == 200 and r.content_type == "application/linkset+json" and r.headers["Vary"] == "Accept"
    document = await r.json()
    (context,) = document["linkset"]
    assert context["anchor"] == str(node.client.make_url(node.path()))
    assert context[DEFAULT_LINK] == [{"href": PRODUCT_PAGE}]
    assert context["describedby"] == [{"href": PRODUCT_PAGE}]
    assert context["https://gs1.org/voc/traceability"] == [{"href": TRACE_PAGE, "title": "gs1:traceability"}]
    manual = {"href": quote(MANUAL, safe=":/"), "title": "gs1:instructions"}
    assert context["https://gs1.org/voc/instructions"] == [manual]
    assert set(context) == {
        "anchor",
        DEFAULT_LINK,
        "describedby",
        *(f"https://gs1.org/voc/{t}" for t in ("traceability", "instructions")),
    }
    # Relation types are registered names or URIs (RFC 9264 section 4.2.2), targets have an href.
    for relation, targets in context.items():
        if relation != "anchor":
            assert relation in ("describedby",) or relation.startswith("https://"), relation
            assert all(t["href"].startswith("https://") for t in targets)
    # The same bytes from the memo the second time.
    again = await _get(node.client, node.path(), Accept="application/linkset+json")
    assert await again.read() == await r.read()


# ---------------------------------------------------------------------------------------- paths and errors


async def test_paths_percent_encoded_slash_utf8_suffixes_and_other_routes(node: Node) -> None:  # noqa: F811
    client = node.client
    handle = f"{node.prefix}/批次 A/2025 12"
    await node.put(handle, [{"index": 1, "type": "URL", "data": "https://example.com/lot"}])
    encoded = quote(handle, safe="")
    for path in ("/" + quote(handle, safe="/"), "/" + encoded, "/" + encoded.replace("%2F", "%2f")):
        assert await _location(node, path) == "https://example.com/lot", path
    r = await _get(client, "/" + quote(handle, safe="/"), **JSON_ACCEPT)
    assert (await r.json())["handle"] == handle
    assert await _location(node, "/" + quote(node.handle, safe="")) == PRODUCT_PAGE
    # The prefix compares case-insensitively; prefix handles resolve (no URL: a page naming the enterprise).
    r = await _get(client, f"/0.na/{node.prefix}")
    assert r.status == 200 and ENTERPRISE_NAME in await r.text()
    # HEAD: status and headers, no body.
    r = await client.head(node.path(), allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == PRODUCT_PAGE
    # Every other route keeps its answer.
    assert (await _get(client, "/healthz")).status == 200
    assert (await _get(client, "/metrics")).status == 200
    assert (await _get(client, "/api/docs")).status == 200
    assert (await _get(client, "/bureau")).status == 401
    r = await _get(client, "/favicon.ico")
    assert r.status == 404 and (await r.json())["responseCode"] == 4
    # A native message over HTTP still goes to the native handler at a handle's path; other methods: 405.
    message = encode_message(make_request(ResolutionRequest(node.handle, (), ()), request_id=7))
    for path in (node.path(), "/" + quote(node.handle, safe="")):
        r = await client.post(path, data=message, headers={"Content-Type": HDL_MIME_TYPE, "Accept": HDL_MIME_TYPE})
        assert r.status == 200 and r.content_type == HDL_MIME_TYPE and PRODUCT_PAGE.encode() in await r.read()
    for method in ("PUT", "DELETE", "PATCH"):
        r = await client.request(method, node.path(), json={})
        assert r.status == 405 and (await r.json())["responseCode"] == 4
    r = await client.post(node.path(), json={})
    assert r.status == 405


async def test_the_urls_qr_codes_carry_resolve_here(node: Node) -> None:  # noqa: F811
    """Every handle's public URL (resolver.http.public_url, what QR codes and labels encode) reaches
    the proxy, suffixes that URL normalisation would rewrite included."""
    for n, suffix in enumerate(("x/../y", "a//b", "a/", "件 1/..", "~é", "./q", "SKU#1?x")):
        handle = f"{node.prefix}/{suffix}"
        target = f"https://example.com/{n}"
        path = "/api/handles/" + quote(handle, safe="")
        r = await node.client.put(
            path, json={"values": [{"index": 1, "type": "URL", "data": target}]}, headers=node.owner
        )
        assert r.status == 201, await r.text()
        assert await _location(node, handle_path(handle)) == target, handle
        r = await _get(node.client, handle_path(handle) + "?noredirect")
        assert r.status == 200 and handle in _html_text(await r.text()).replace("&#39;", "'"), handle


async def test_errors_are_pages_for_people_and_json_for_clients(node: Node) -> None:  # noqa: F811
    client = node.client
    cases = [
        (f"/{node.prefix}/no-such-product", 404, 100),
        ("/86.100.1/ABC", 400, 301),  # another node's prefix
        (f"/{node.prefix}", 400, 102),  # no suffix
        (f"/{node.prefix}/", 400, 102),
        (f"/{node.prefix}/%C0%AF", 400, 102),  # not UTF-8
        (f"/{node.prefix}/" + "x" * 300, 400, 102),  # longer than a handle may be
        ("/0.NA/86.100", 400, 301),
    ]
    for path, status, code in cases:
        page = await _get(client, path, Accept=BROWSER)
        assert page.status == status and page.content_type == "text/html", path
        html = await page.text()
        assert 'id="resolve-form"' in html and page.headers["Vary"] == "Accept, Accept-Language, Cookie"
        assert page.headers["Content-Language"] == "zh-CN"
        plain = await _get(client, path)  # no Accept at all: for people too
        assert plain.status == status and plain.content_type == "text/html"
        for accept in (JSON_ACCEPT, LINKSET_ACCEPT):
            r = await _get(client, path, **accept)
            assert r.status == status and r.content_type == "application/json", (path, accept)
            body = await r.json()
            assert body["responseCode"] == code, (path, body)
    html = await (await _get(client, f"/{node.prefix}/no-such-product")).text()
    assert "本节点未注册该标识" in html and f"{node.prefix}/no-such-product" in html
    html = await (await _get(client, "/86.100.1/ABC?lang=en")).text()
    assert "This identifier belongs to another node" in html
    # The JSON error is the REST API's.
    web = await _get(client, f"/{node.prefix}/no-such-product", **JSON_ACCEPT)
    api = await _get(client, f"/api/handles/{node.prefix}/no-such-product")
    assert await web.read() == await api.read()


# ---------------------------------------------------------------------------------------- pages


async def test_landing_page_shows_the_record_for_people_and_is_kept_with_the_record(node: Node) -> None:  # noqa: F811
    client = node.client
    path = node.path() + "?noredirect"
    first = await _get(client, path)
    html = await first.text()
    text = _html_text(html)
    assert first.headers["Vary"] == "Accept, Accept-Language, Cookie" and first.headers["Content-Language"] == "zh-CN"
    for shown in (
        node.handle,
        ENTERPRISE_NAME,
        "工业互联网标识解析二级节点 88.118.8",
        "2025年11月18日 09:30",  # registered (Beijing time)
        "2025年12月2日 14:05",  # last changed
        "智能电动螺丝刀",
        "曜石黑",
        "B2025-11-A",
        "power-tool",
        "追溯信息",
    ):
        assert shown in text, shown
    assert f'href="{PRODUCT_PAGE}"' in html and f'href="{TRACE_PAGE}"' in html
    assert "HS_ADMIN" not in html and "TEMPLATE" not in html  # administrative values are not product information
    # The same bytes again, from the memo; English by Accept-Language or ?lang=en.
    state = client.server.app[PROXY_KEY]
    assert len(state.pages) >= 1
    assert await (await _get(client, path)).read() == await first.read()
    en = await (await _get(client, path, **{"Accept-Language": "en-US,en;q=0.9"})).text()
    assert "Registered on" in en and "November 18, 2025 09:30" in en and "Industrial Internet identifier" in en
    assert await (await _get(client, path + "&lang=en")).text() == en
    zh = await (await _get(client, path + "&lang=zh", **{"Accept-Language": "en"})).text()
    assert "注册时间" in zh
    # A write makes a new record: the next page shows it, with no invalidation of its own.
    values: list[dict[str, Any]] = [
        {"index": 1, "type": "URL", "data": PRODUCT_PAGE},
        {"index": 1001, "type": "TEMPLATE", "data": "power-tool@1"},
        {"index": 2001, "type": "PRODUCT_NAME", "data": "智能电动螺丝刀 二代"},
        {"index": 2004, "type": "COLOR", "data": "星空灰"},
    ]
    await node.put(node.handle, values)
    after = _html_text(await (await _get(client, path)).text())
    assert "星空灰" in after and "曜石黑" not in after and "智能电动螺丝刀 二代" in after


async def test_public_values_feed_every_answer(node: Node) -> None:  # noqa: F811
    """The memo of destinations holds what registry.read_policy serves to anonymous callers."""
    await _get(node.client, node.path())
    state = node.client.server.app[STATE_KEY]
    assert state.registry is not None and state.resolver is not None
    record = await state.resolver.lookup(state.registry.parse(node.handle).key)
    assert record is not None
    found = node.client.server.app[PROXY_KEY].destinations.get(record)
    assert found is not None and found.values == tuple(sorted(public_values(record.values), key=lambda v: v.index))
    assert 2 not in found.urls and 2006 not in {v.index for v in found.values}


# ---------------------------------------------------------------------------------------- home page


async def test_home_page_resolves_what_a_person_types(node: Node) -> None:  # noqa: F811
    client = node.client
    r = await _get(client, "/")
    assert r.status == 200 and r.content_type == "text/html"
    html = await r.text()
    assert 'name="hdl"' in html and "二级节点 88.118.8" in html
    for typed in (node.handle, f"  hdl:{node.handle} ", f"https://id.example.cn/{quote(node.handle, safe='/')}"):
        r = await _get(client, "/?" + "hdl=" + quote(typed))
        assert r.status == 303 and r.headers["Location"] == node.path(), typed
    r = await _get(client, "/?hdl=" + quote(node.handle) + "&noredirect=1")
    assert r.status == 303 and r.headers["Location"] == node.path() + "?noredirect"
    for typed, words in (("not a handle", "这不是有效的标识"), ("86.100.1/ABC", "该标识不属于本节点")):
        r = await _get(client, "/?hdl=" + quote(typed))
        html = await r.text()
        assert r.status == 400 and words in html and f'value="{typed}"' in html
    r = await _get(client, "/?hdl=%3Cscript%3E/x")
    assert r.status == 400 and "<script>" not in await r.text()


async def test_answers_have_no_server_errors_for_odd_input(node: Node) -> None:  # noqa: F811
    client = node.client
    odd = [
        "?index=" + "9" * 50,
        "?index=-1",
        "?type=" + "T" * 300,
        "?locatt=" + "&locatt=".join(["a:b"] * 20),
        "?urlappend=" + "x" * 3000,
        "?lang=xx",
        "?noredirect=maybe",
    ]
    for query in odd:
        for accept in (BROWSER, "application/json", "application/linkset+json"):
            r = await _get(client, node.path() + query, Accept=accept)
            assert r.status < 500, (query, accept, r.status)
    r = await _get(client, node.path(), Accept="a/b;q=" + "9" * 400 + ", " * 2000)
    assert r.status == 302


async def test_web_resolutions_are_counted_once_each(node: Node) -> None:  # noqa: F811
    """Resolution statistics: each request at a handle's URL counts once for its prefix under ``web``
    (found or not; a JSON one too, not as ``rest``); alias hops and errors before the lookup do not."""
    counter = node.client.server.app[STATE_KEY].resolutions
    counter.take()
    alias = f"{node.prefix}/alias-to-product"
    await node.put(alias, [{"index": 1, "type": "HS_ALIAS", "data": node.handle}])
    counter.take()
    for headers in ({}, {"Accept": BROWSER}, JSON_ACCEPT, LINKSET_ACCEPT):
        await _get(node.client, node.path(), **headers)
    await _get(node.client, node.path() + "?noredirect")
    await _get(node.client, node.path(alias))  # one resolution, though two records are read
    await _get(node.client, node.path(f"{node.prefix}/nothing"))
    await _get(node.client, node.path(f"{node.prefix}/nothing"), **JSON_ACCEPT)
    await _get(node.client, "/86.100.1/ABC")  # not this node's: no resolution
    await _get(node.client, "/api/handles/" + quote(node.handle, safe="/"))
    found, missing = counter.take()
    assert found["web"] == {node.prefix: 6} and missing["web"] == {node.prefix: 2}
    assert found["rest"] == {node.prefix: 1} and not missing["rest"]


# ---------------------------------------------------------------------------------------- a real node


def test_a_real_node_answers_a_scan(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``idnode serve`` itself (its own process, the production server stack): a scan is redirected,
    the page and the other routes answer."""
    import urllib.error
    import urllib.request

    from tests.conftest import ADMIN_SECRET
    from tests.nodeproc import NodeProcess
    from tests.resolver.conftest import NODE_ADMIN, basic

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(Stay)
    proc = NodeProcess(tmp_path / "node").wait_ready()
    try:
        body = json.dumps({"values": [{"index": 1, "type": "URL", "data": "https://example.com/scan 1"}]}).encode()
        put = urllib.request.Request(
            f"{proc.url}/api/handles/88.118.8/scan-1",
            data=body,
            method="PUT",
            headers={"Content-Type": "application/json", **basic(NODE_ADMIN, ADMIN_SECRET)},
        )
        assert opener.open(put, timeout=10).status == 201
        try:
            opener.open(f"{proc.url}/88.118.8%2Fscan-1", timeout=10)
            raise AssertionError("no redirect")
        except urllib.error.HTTPError as exc:
            assert exc.code == 302 and exc.headers["Location"] == "https://example.com/scan%201"
        with opener.open(f"{proc.url}/88.118.8/scan-1?noredirect&lang=en", timeout=10) as page:
            html = page.read().decode()
            assert page.status == 200 and "88.118.8/scan-1" in html and "secondary node 88.118.8" in html
        with opener.open(f"{proc.url}/", timeout=10) as home:
            assert home.status == 200 and 'name="hdl"' in home.read().decode()
        with opener.open(f"{proc.url}/healthz", timeout=10) as health:
            assert health.status == 200
    finally:
        proc.stop()
