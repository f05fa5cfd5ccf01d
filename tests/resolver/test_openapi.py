"""``resolver/http/openapi.json`` stays true to the app: every route is described and every described
operation is routed; it is a valid OpenAPI 3.1 document; it is served as it is, and its docs page
shows every operation without anything from elsewhere. (Schemathesis fuzzes a live node against it
in ``test_openapi_fuzz.py``.)

Adding a route: describe it in ``resolver/http/openapi.json`` (path, method, parameters, bodies, every
status it answers), and, if it is registered with ``"*"`` (any method), list the methods its
handler takes in ``WILDCARD_METHODS``.

Two routes share the canonical path ``/{handle}``. Native Handle messages over HTTP
(``resolver.native.http``) match ``POST`` at any path, but only with ``Content-Type:
application/x-hdl-message``; a handle's URL for people (``resolver.proxy``) matches ``GET`` (and HEAD)
at paths whose first segment is a handle prefix. Every other request goes on to the other routes, whose
404 and 405 answers the document describes as before (tested below).
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient

from resolver.config import load_config
from resolver.http.api_docs import METHODS, spec
from resolver.http.app import create_app
from resolver.native.http import HDL_MIME_TYPE

# Routes registered for any method ("*"): the methods their handler answers; any other is a 405.
WILDCARD_METHODS = {"/api/sessions/this": {"GET", "PUT", "POST", "DELETE"}}


def app_operations(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, canonical path) of every route. aiohttp adds HEAD to every GET route; HEAD is
    described once for all in the document's description, so it is left out here."""
    operations = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD":
            continue
        methods = WILDCARD_METHODS[path] if route.method == "*" else {route.method}
        operations |= {(method, path) for method in methods}
    return operations


def spec_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in METHODS if method in item}


@pytest.fixture
def app(tmp_path) -> web.Application:  # type: ignore[no-untyped-def]
    return create_app(load_config(env={}, overrides={"data_dir": str(tmp_path)}))


def test_every_route_is_described_and_every_operation_is_routed(app: web.Application) -> None:
    routed, described = app_operations(app), spec_operations(spec())
    assert routed - described == set(), "routes missing from resolver/http/openapi.json"
    assert described - routed == set(), "operations in resolver/http/openapi.json that no route serves"
    heads = {route.resource.canonical for route in app.router.routes() if route.method == "HEAD"}
    plain_gets = {path for method, path in routed if method == "GET" and path not in WILDCARD_METHODS}
    assert heads == plain_gets, "HEAD is only GET's automatic twin"


def test_wildcard_routes_refuse_other_methods(app: web.Application) -> None:
    """WILDCARD_METHODS is what the handlers do: every other method is a 405."""
    wildcard = {route.resource.canonical for route in app.router.routes() if route.method == "*"}
    assert wildcard == set(WILDCARD_METHODS), "a new '*' route: list its methods in WILDCARD_METHODS"


@pytest.mark.parametrize("method", ["PATCH", "OPTIONS", "TRACE"])
async def test_wildcard_route_answers_405_to_other_methods(client: TestClient, method: str) -> None:
    for path, allowed in WILDCARD_METHODS.items():
        assert method not in allowed
        r = await client.request(method, path)
        assert r.status == 405, (path, method, await r.text())
        assert (await r.json())["responseCode"] == 4


NATIVE_PATH = "/{handle}"


def test_native_catch_all_is_described_by_its_content_type(app: web.Application) -> None:
    """The catch-all route is the document's ``POST /{handle}``, which takes and answers only native
    messages: a client reading the document cannot take it for a JSON API at every path. ``GET`` at the
    same path is the proxy's (pages, redirects, JSON and linksets of a handle)."""
    routed = [r for r in app.router.routes() if r.resource is not None and r.resource.canonical == NATIVE_PATH]
    assert sorted(r.method for r in routed) == ["GET", "HEAD", "POST"]
    item = spec()["paths"][NATIVE_PATH]
    assert [m for m in METHODS if m in item] == ["get", "post"]
    assert "text/html" in item["get"]["responses"]["200"]["content"]
    operation = item["post"]
    assert set(operation["requestBody"]["content"]) == {HDL_MIME_TYPE}
    assert set(operation["responses"]["200"]["content"]) == {HDL_MIME_TYPE}
    assert {"404", "405"} <= set(operation["responses"]), "other requests at such paths: 404 and 405"


@pytest.mark.parametrize(
    ("method", "path", "content_type", "status"),
    [
        ("POST", "/healthz", "application/json", 405),  # a documented path without POST
        ("POST", "/api/promotion/public-key", "application/json", 405),
        ("PUT", "/0.NA%2F88.118.8", HDL_MIME_TYPE, 405),  # only POST carries native messages; a handle's path takes GET
        ("POST", "/0.NA%2F88.118.8", "application/json", 405),  # a JSON POST to a handle path
        ("POST", "/not-a-handle", "application/json", 404),  # a JSON POST to a path nothing serves
        ("POST", "/healthz", HDL_MIME_TYPE, 400),  # a native message at any path (too short here)
    ],
)
async def test_requests_beside_the_catch_all_answer_as_documented(
    client: TestClient, method: str, path: str, content_type: str, status: int
) -> None:
    document = spec()
    if status == 405:  # a path the document has (a handle's path is its /{handle}), without this method
        described = document["paths"].get(path) or document["paths"][NATIVE_PATH]
        assert method.lower() not in described or (method == "POST" and content_type != HDL_MIME_TYPE)
    r = await client.request(method, path, data=b"{}", headers={"Content-Type": content_type})
    assert r.status == status, await r.text()
    assert r.content_type == "application/json"
    assert (await r.json())["responseCode"] == 4
    assert str(status) in document["paths"][NATIVE_PATH]["post"]["responses"]


def test_document_is_valid_openapi_3_1() -> None:
    document = spec()
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_reference_resolves_and_every_component_is_used() -> None:
    document = spec()
    refs = set(_refs(document))
    for ref in refs:
        assert ref.startswith("#/components/"), ref
        kind, name = ref.removeprefix("#/components/").split("/")
        assert name in document["components"][kind], f"{ref} does not resolve"
    defined = {
        f"#/components/{kind}/{name}"
        for kind in ("schemas", "responses", "parameters", "headers")
        for name in document["components"].get(kind, {})
    }
    assert defined - refs == set(), "components nothing refers to"
    used_schemes = {
        name
        for _, item in document["paths"].items()
        for method in METHODS
        if method in item
        for option in item[method].get("security", [])
        for name in option
    }
    assert used_schemes == set(document["components"]["securitySchemes"])


def test_operations_have_ids_tags_and_error_bodies() -> None:
    document = spec()
    ids = []
    tags = {t["name"] for t in document["tags"]}
    for path, item in document["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            operation = item[method]
            ids.append(operation["operationId"])
            assert set(operation["tags"]) <= tags, (method, path)
            assert operation["summary"], (method, path)
            assert "security" in operation, f"{method} {path}: say whether it takes credentials"
            for status in operation["responses"]:
                assert status.isdigit(), f"{method} {path}: list the statuses, no 'default'"
    assert len(ids) == len(set(ids)), "operationId must be unique"


async def test_document_is_served_as_it_is(client: TestClient) -> None:
    r = await client.get("/api/openapi.json")
    assert r.status == 200
    assert r.content_type == "application/json"
    assert await r.read() == resources.files("resolver.http").joinpath("openapi.json").read_bytes()
    assert (await r.json())["paths"].keys() == spec()["paths"].keys()


async def test_docs_page_shows_every_operation_and_needs_nothing_from_elsewhere(client: TestClient) -> None:
    r = await client.get("/api/docs")
    assert r.status == 200
    assert r.content_type == "text/html"
    page = await r.text()
    document = spec()
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                assert f'id="{item[method]["operationId"]}"' in page, (method, path)
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    assert "接口文档 API reference" in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must work offline"
    assert f"<title>{document['info']['title']}</title>" in page
