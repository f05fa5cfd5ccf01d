"""Reverse lookup against a real ``idnode serve`` with pyhandle's own ``Searcher.search_handle``: what it
sends (``/hrls/handles?URL=*part*`` with Basic credentials) and parses (a JSON list), paging with
``page`` and ``limit``, each caller seeing only what it administers, and pyhandle's errors for wrong
credentials and for the bureau's auditor."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from pyhandle.handleexceptions import ReverseLookupException
from pyhandle.searcher import Searcher

from tests.conftest import ADMIN_SECRET
from tests.nodeproc import NodeProcess
from tests.resolver.conftest import NODE_ADMIN, basic
from tests.resolver.test_shared_cache import call, enterprise

ADMIN = basic(NODE_ADMIN, ADMIN_SECRET)
KEYS = ["URL", "EMAIL", "CHECKSUM", "page", "limit"]


def searcher(node: NodeProcess, identity: str, secret: str) -> Searcher:
    return Searcher(
        reverselookup_baseuri=node.url,
        reverselookup_username=identity,
        reverselookup_password=secret,
        allowed_search_keys=KEYS,
        HTTPS_verify=False,
    )


def batch(node: NodeProcess, headers: dict[str, str], items: list[dict[str, Any]]) -> None:
    body = "".join(json.dumps(i) + "\n" for i in items).encode()
    request = urllib.request.Request(
        f"{node.url}/api/handles", data=body, method="POST", headers={**headers, "Content-Type": "application/x-ndjson"}
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.status == 201


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, dict[str, Any], dict[str, Any]]]:
    proc = NodeProcess(tmp_path_factory.mktemp("search")).wait_ready()
    try:
        a, b = enterprise(proc, 1), enterprise(proc, 2)
        for ent, site in ((a, "shop.example.com"), (b, "other.example.org")):
            items = [
                {
                    "handle": f"{ent['prefix']}/P-{n:03d}",
                    "values": [
                        {"index": 1, "type": "URL", "data": f"https://{site}/p/{n:03d}"},
                        {"index": 2, "type": "CHECKSUM", "data": f"sha1:{n % 3}"},
                    ],
                }
                for n in range(150)
            ]
            batch(proc, basic(ent["admin"], ent["secret"]), items)
        # The index follows writes in the background: wait until the last one is searchable.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, found = call(f"{proc.url}/hrls/handles?URL=https://other.example.org/p/149", headers=ADMIN)
            assert status == 200, found
            if found:
                break
            time.sleep(0.2)
        yield proc, a, b
    finally:
        proc.stop()


def test_search_handle_finds_an_enterprises_own_handles(node):
    proc, a, _ = node
    mine = searcher(proc, a["admin"], a["secret"])
    assert mine.search_handle(URL="https://shop.example.com/p/007") == [f"{a['prefix']}/P-007"]
    found = mine.search_handle(URL="*example.com/p/01*")
    assert found == [f"{a['prefix']}/P-{n:03d}" for n in range(10, 20)]
    assert mine.search_handle(URL="*other.example.org*") == []  # B's: not A's to see
    both = mine.search_handle(URL="*example.com/p/1*", CHECKSUM="sha1:2")
    assert both == [f"{a['prefix']}/P-{n:03d}" for n in range(100, 150) if n % 3 == 2]
    assert mine.search_handle(URL="*shop.EXAMPLE.com/p/02*", prefix=a["prefix"]) == [
        f"{a['prefix']}/P-{n:03d}" for n in range(20, 30)
    ]


def test_paging_beyond_a_thousand(node):
    proc, a, _ = node
    admin = searcher(proc, NODE_ADMIN, ADMIN_SECRET)
    everything = admin.search_handle(URL="*example*", limit="10000")
    assert len(everything) == 300 and everything[:2] == [f"{a['prefix']}/P-000", f"{a['prefix']}/P-001"]
    pages = [admin.search_handle(URL="*example*", page=str(p), limit="64") for p in range(5)]
    assert [len(p) for p in pages] == [64, 64, 64, 64, 44]
    assert [h for p in pages for h in p] == everything
    status, _ = call(f"{proc.url}/hrls/handles?URL=*example*&limit=64&page=4", headers=ADMIN)
    assert status == 200
    request = urllib.request.Request(f"{proc.url}/hrls/handles?URL=*example*&limit=64", headers=ADMIN)
    with urllib.request.urlopen(request, timeout=15) as r:
        assert r.headers["Link"] == '</hrls/handles?URL=*example*&limit=64&page=1>; rel="next"'


def test_pyhandles_errors(node):
    proc, a, _ = node
    with pytest.raises(ReverseLookupException, match="Authentication failed"):
        searcher(proc, a["admin"], "not-the-secret").search_handle(URL="*example*")
    status, body = call(f"{proc.url}/api/auditors", "POST", {"name": "bureau"}, ADMIN)
    assert status == 201
    with pytest.raises(ReverseLookupException):
        searcher(proc, body["identity"], body["secret"]).search_handle(URL="*example*")  # 403
    with pytest.raises(ReverseLookupException):
        searcher(proc, a["admin"], a["secret"]).search_handle(URL="*ex*")  # 400: fewer than 3 in a row
