"""Anonymous resolves answered from ready replies (resolver.http.hot_path): the same answer and
headers as the full path, retired by every write, never holding or serving a non-public value, and
counted in the same metrics."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from resolver.config import load_config
from resolver.http import routes
from resolver.http.app import create_app
from resolver.http.keys import STATE_KEY

H = "88.118.8/hot"
PATH = f"/api/handles/{H}"


def _values(url: str) -> dict[str, Any]:
    return {
        "values": [
            {"index": 1, "type": "URL", "data": url},
            {"index": 2, "type": "NOTE", "data": "internal", "permissions": "1100"},
        ]
    }


async def _put(client, admin, url: str) -> None:  # type: ignore[no-untyped-def]
    r = await client.put(PATH, json=_values(url), headers=admin)
    assert r.status in (200, 201), await r.text()


def _full_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on only the hot path can answer 200 for an anonymous resolve."""

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the full path answered")

    monkeypatch.setattr(routes, "resolve_name", refuse)


async def test_hot_path_replies_are_the_full_paths_replies(client, admin, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await _put(client, admin, "https://example.com/a")
    # The same store served by an application without the hot path (it is off with the access log).
    config = load_config(
        env={},
        overrides={"data_dir": str(tmp_path / "full"), "store": f"sqlite:///{tmp_path}/idnode.db", "access_log": True},
    )
    async with TestClient(TestServer(create_app(config))) as full:
        reference = await full.get(PATH)
        body = await reference.read()
        full_head = await full.head(PATH)
    assert reference.status == 200 and b"internal" not in body
    first = await client.get(PATH)  # the lane (router and middleware skipped), which renders the reply
    assert first.status == 200 and await first.read() == body
    assert len(client.app[STATE_KEY].replies) == 1
    _full_path_off(monkeypatch)
    second = await client.get(PATH)  # the ready reply
    assert second.status == 200 and await second.read() == body
    for r in (first, second):
        assert list(r.headers) == list(reference.headers)
        for header in ("Content-Type", "Content-Length", "Server"):
            assert r.headers[header] == reference.headers[header]
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"])
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]
    echoed = await client.get(PATH, headers={"X-Request-Id": "trace-abc-123"})
    assert echoed.headers["X-Request-Id"] == "trace-abc-123"
    head = await client.head(PATH)
    assert head.status == 200 and await head.read() == b""
    assert list(head.headers) == list(full_head.headers) and head.headers["Content-Length"] == str(len(body))


async def test_credentials_and_queries_take_the_full_path(client, admin) -> None:  # type: ignore[no-untyped-def]
    await _put(client, admin, "https://example.com/a")
    for _ in range(2):
        public = await (await client.get(PATH)).json()
        assert 2 not in {v["index"] for v in public["values"]}
    # The node administrator reads the non-public value: never from the anonymous reply.
    mine = await (await client.get(PATH, headers=admin)).json()
    assert {v["index"] for v in mine["values"]} == {1, 2, 100}
    typed = await (await client.get(PATH + "?type=NOTE", headers=admin)).json()
    assert [v["index"] for v in typed["values"]] == [2]
    # And the anonymous reply after them is still the public one.
    assert await (await client.get(PATH)).json() == public
    assert [target for target, _ in client.app[STATE_KEY].replies._replies] == [PATH]  # the anonymous one


async def test_writes_and_deletes_retire_ready_replies(client, admin) -> None:  # type: ignore[no-untyped-def]
    for n in range(5):
        await _put(client, admin, f"https://example.com/{n}")
        for _ in range(3):
            got = await (await client.get(PATH)).json()
            assert got["values"][0]["data"]["value"] == f"https://example.com/{n}"
    r = await client.delete(PATH, headers=admin)
    assert r.status == 200
    for _ in range(2):
        r = await client.get(PATH)
        assert r.status == 404 and (await r.json())["responseCode"] == 100
    await _put(client, admin, "https://example.com/back")
    assert (await (await client.get(PATH)).json())["values"][0]["data"]["value"] == "https://example.com/back"


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_hot_path_answers_are_counted(client, admin, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    await _put(client, admin, "https://example.com/a")
    await client.get(PATH)  # the full path renders the reply

    async def counts() -> tuple[float, float, float, float]:
        text = await (await client.get("/metrics")).text()
        route = {"route": "/api/handles/{handle}", "method": "GET"}
        return (
            _sample(text, "idnode_http_requests_total", status="200", **route),
            _sample(text, "idnode_http_request_duration_seconds_count", **route),
            _sample(text, "idnode_cache_requests_total", tier="local", result="hit"),
            client.app[STATE_KEY].resolver.cache.stats.local_hits,
        )

    before = await counts()
    _full_path_off(monkeypatch)
    for _ in range(7):
        assert (await client.get(PATH)).status == 200
    after = await counts()
    assert [b - a for a, b in zip(before, after, strict=True)] == [7, 7, 7, 7]
    found = client.app[STATE_KEY].resolutions.take()[0]
    assert found["rest"]["88.118.8"] >= 8


async def test_a_handle_urls_redirect_is_kept_and_retired(client, admin, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from resolver.proxy import answer

    await _put(client, admin, "https://example.com/a")
    first = await client.get(f"/{H}", allow_redirects=False)
    assert first.status == 302 and first.headers["Location"] == "https://example.com/a"
    assert len(client.app[STATE_KEY].replies) == 1

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the full path answered")

    with monkeypatch.context() as patched:
        patched.setattr(answer, "_answer", refuse)
        second = await client.get(f"/{H}", allow_redirects=False)
        assert second.status == 302 and list(second.headers) == list(first.headers)
        for header in ("Location", "Vary", "Content-Length"):
            assert second.headers[header] == first.headers[header]
        assert second.headers["X-Request-Id"] != first.headers["X-Request-Id"]
    # Another Accept is another answer (JSON here), never the kept redirect.
    r = await client.get(f"/{H}", headers={"Accept": "application/json"}, allow_redirects=False)
    assert r.status == 200 and (await r.json())["handle"] == H
    # With credentials: the full path.
    r = await client.get(f"/{H}", headers=admin, allow_redirects=False)
    assert r.status == 302
    await _put(client, admin, "https://example.com/b")
    r = await client.get(f"/{H}", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "https://example.com/b"


async def test_landing_pages_are_kept_by_language_and_retired(client, admin, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from resolver.proxy import answer

    page = f"/{H}?noredirect"
    await _put(client, admin, "https://example.com/a")
    zh = await client.get(page)
    en = await client.get(page, headers={"Accept-Language": "en-GB,en;q=0.9"})
    foreign = await client.get(page + "&lang=en", headers={"Cookie": "lang=zh"})  # the query chose: not kept
    zh_body, en_body = await zh.read(), await en.read()
    assert (zh.status, zh.headers["Content-Language"], en.headers["Content-Language"]) == (200, "zh-CN", "en")
    assert foreign.headers["Content-Language"] == "en" and b"internal" not in zh_body + en_body
    assert len(client.app[STATE_KEY].replies) == 2

    async def landings(lang: str) -> float:
        text = await (await client.get("/metrics")).text()
        return _sample(text, "idnode_web_landing_pages_total", lang=lang)

    zh_before, en_before = await landings("zh"), await landings("en")

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the full path answered")

    with monkeypatch.context() as patched:
        patched.setattr(answer, "_answer", refuse)
        again = await client.get(page)
        assert await again.read() == zh_body and list(again.headers) == list(zh.headers)
        for header in ("Content-Type", "Content-Language", "Vary", "Content-Length"):
            assert again.headers[header] == zh.headers[header]
        assert again.headers["Vary"] == "Accept, Accept-Language, Cookie"
        assert again.headers["X-Request-Id"] != zh.headers["X-Request-Id"]
        # The cookie outranks Accept-Language, as negotiate_locale decides: the Chinese page.
        cookie = await client.get(page, headers={"Cookie": "session=1; lang=zh", "Accept-Language": "en"})
        assert await cookie.read() == zh_body
        english = await client.get(page, headers={"Accept-Language": "en"})
        assert await english.read() == en_body
        assert (await landings("zh"), await landings("en")) == (zh_before + 2, en_before + 1)
    # Credentials and another Accept: the full path; the anonymous page stays the public one.
    assert b"internal" in await (await client.get(page, headers=admin)).read()
    assert (await client.get(page, headers={"Accept": "application/json"})).status == 200
    assert b"internal" not in await (await client.get(page)).read()
    # A write retires every language's page.
    await _put(client, admin, "https://example.com/b")
    for headers in ({}, {"Accept-Language": "en"}):
        body = await (await client.get(page, headers=headers)).read()
        assert b"https://example.com/b" in body and b"https://example.com/a" not in body


async def test_a_redirect_becomes_a_kept_page_when_its_url_is_removed(client, admin, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from resolver.proxy import answer

    await _put(client, admin, "https://example.com/a")
    assert (await client.get(f"/{H}", allow_redirects=False)).status == 302  # kept
    r = await client.put(PATH, json={"values": [{"index": 5, "type": "DESC", "data": "no URL now"}]}, headers=admin)
    assert r.status in (200, 201), await r.text()
    first = await client.get(f"/{H}", allow_redirects=False)  # the landing page, kept instead of the 302
    assert first.status == 200 and b"no URL now" in await first.read()
    with monkeypatch.context() as patched:
        patched.setattr(answer, "_answer", _refuse)
        again = await client.get(f"/{H}", allow_redirects=False)
        assert again.status == 200 and await again.read() == await first.read()


async def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the full path answered")
