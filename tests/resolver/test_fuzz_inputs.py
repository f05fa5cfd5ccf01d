"""Property-based fuzzing of what clients send: no input may get a 5xx, every reply is JSON.

Hypothesis throws arbitrary text and numbers (Unicode digits, signs, 5,000-digit numbers, NULs,
unpaired surrogates, invalid UTF-8 in paths and queries, wrong Content-Encodings) at the query
parameters and JSON, NDJSON and msgpack bodies of the main routes, anonymously and with the node
administrator's credentials, against a node on each store. Every reply must be below 500,
``application/json``, with an integer ``responseCode`` (and a message when it is an error), and
no refusal may come from the store itself: input is checked before a store sees it.

Seeded (``derandomize``) and bounded (7–15 s): ``IDNODE_FUZZ_EXAMPLES`` (default 150 reads and
450 writes per store) raises the number of cases for a longer run by hand.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from resolver.config import load_config
from resolver.http.app import create_app
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, NODE_PREFIX, basic, make_uscc

EXAMPLES = int(os.environ.get("IDNODE_FUZZ_EXAMPLES", "150"))
ADMIN = basic(NODE_ADMIN, ADMIN_SECRET)
BIG = "7" * 5000  # a JSON integer Python's json will not convert (more than 4,300 digits)
_BIG_MARK = "\x01big\x01"
_SURROGATE_MARK = "\x01sur\x01"

# -- strategies -------------------------------------------------------------------------------------
NUMBER_TEXT = st.one_of(
    st.sampled_from(
        [
            "²",
            "١٢",
            "①",
            "٣٠٠",
            "-1",
            "+1",
            " 1",
            "1_000",
            "",
            "0",
            "1e3",
            "0x10",
            "1.0",
            "NaN",
            "Infinity",
            "9" * 25,
            "9" * 5000,
            "\x00",
            "4294967296",
            "9223372036854775808",
            "18446744073709551616",
            "various",
            "1001",
            "1",
            "300",
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=12),
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 100, 300, 2**31 - 1, 2**32, 2**63, 2**64, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    NUMBER_TEXT,
    st.sampled_from([_BIG_MARK, _SURROGATE_MARK, "9999-12-31T00:00:00Z", "0001-01-01T00:00:00+14:00", "2030-01-01"]),
)
ANY_JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
DATA = st.one_of(
    st.text(max_size=30),
    st.fixed_dictionaries(
        {
            "format": st.sampled_from(["string", "base64", "hex", "admin", "vlist", "site", "key", "x", ""]),
            "value": ANY_JSON,
        }
    ),
    ANY_JSON,
)
VALUE_FIELDS = {
    "index": SCALAR,
    "type": st.sampled_from(["URL", "EMAIL", "HS_ADMIN", "HS_SITE", "HS_VLIST", "HS_PUBKEY", "HS_SECKEY", "TEMPLATE"])
    | st.text(max_size=10),
    "data": DATA,
    "ttl": SCALAR,
    "permissions": SCALAR,
    "references": st.lists(st.fixed_dictionaries({}, optional={"handle": SCALAR, "index": SCALAR}), max_size=2)
    | SCALAR,
    "timestamp": SCALAR,
}
VALUE = st.fixed_dictionaries({}, optional=VALUE_FIELDS)
HANDLE = st.one_of(
    st.sampled_from([f"{NODE_PREFIX}/fuzz", f"{NODE_PREFIX}.1001/fuzz", f"{NODE_PREFIX}/", "0.NA/" + NODE_PREFIX]),
    st.text(max_size=12).map(lambda s: f"{NODE_PREFIX}/{s}"),
    st.text(max_size=16),
)
SEGMENT = st.one_of(
    NUMBER_TEXT.map(lambda s: quote(s, safe="")),
    st.binary(max_size=6).map(lambda b: quote(b, safe="")),  # invalid UTF-8 too
)
ENCODING = st.one_of(
    st.just(None),
    st.sampled_from(["gzip", "deflate", "br", "zstd", "identity", "x-gzip", "gzip, gzip", "GZIP", "²"]),
)
BASE_VALUE = {"index": 1, "type": "URL", "data": "https://example.com/p/1"}


@st.composite
def near_valid_value(draw: Callable[..., Any]) -> dict[str, Any]:
    """A valid value with one or two fields replaced: gets past the first checks."""
    value = dict(BASE_VALUE)
    for key in draw(st.lists(st.sampled_from(sorted(VALUE_FIELDS)), min_size=1, max_size=2)):
        value[key] = draw(VALUE_FIELDS[key])
    return value


@dataclass
class Case:
    method: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # JSON-able, a list of items (batches) or raw bytes
    kind: str = "json"  # json | ndjson | jsonarray | msgpack | raw
    encoding: str | None = None
    compress: bool = True  # when an encoding is named: actually compress the body


def _json_text(obj: Any) -> str:
    """json.dumps with the markers turned into what json.dumps cannot write itself."""
    text = json.dumps(obj, ensure_ascii=True)
    return text.replace(json.dumps(_BIG_MARK), BIG).replace(json.dumps(_SURROGATE_MARK), '"\\ud800x"')


def _items(obj: Any) -> list[Any]:
    return obj if isinstance(obj, list) else [obj]


def _encode(case: Case) -> tuple[bytes, str]:
    if case.kind == "raw":
        return case.body, "application/json"
    if case.kind == "ndjson":
        return "\n".join(_json_text(i) for i in _items(case.body)).encode(), "application/x-ndjson"
    if case.kind == "msgpack":
        try:
            return msgpack.packb(_items(case.body), use_bin_type=True), "application/msgpack"
        except (OverflowError, TypeError, ValueError):
            return b"\x91\xc1", "application/msgpack"  # an array holding a never-used byte
    if case.kind == "jsonarray":
        return ("[" + ",".join(_json_text(i) for i in _items(case.body)) + "]").encode(), "application/json"
    return _json_text(case.body).encode(), "application/json"


def _compressed(data: bytes, encoding: str) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(data)
    if encoding == "deflate":
        return zlib.compress(data)
    return data


@st.composite
def read_cases(draw: Callable[..., Any]) -> Case:
    """GETs with odd query parameters and path segments."""
    route = draw(st.sampled_from(["handle", "list", "enterprise", "template", "prefixes", "promoters"]))
    if route == "handle":
        query = [(k, draw(NUMBER_TEXT)) for k in draw(st.lists(st.sampled_from(["index", "type"]), max_size=3))]
        query += [
            (k, draw(st.sampled_from(["", "true", "x"])))
            for k in draw(st.sets(st.sampled_from(["auth", "publicOnly", "pretty"])))
        ]
        return Case("GET", "/api/handles/" + quote(draw(HANDLE), safe="/"), query)
    if route == "list":
        query = [("prefix", draw(st.sampled_from([NODE_PREFIX, f"0.NA/{NODE_PREFIX}"]) | st.text(max_size=10)))]
        query += [(k, draw(NUMBER_TEXT)) for k in draw(st.sets(st.sampled_from(["page", "pageSize"])))]
        return Case("GET", "/api/handles", query)
    if route == "enterprise":
        return Case("GET", "/api/enterprises/" + draw(SEGMENT))
    if route == "template":
        query = [(k, draw(NUMBER_TEXT)) for k in draw(st.sets(st.sampled_from(["version", "prefix"])))]
        return Case("GET", "/api/templates/" + draw(SEGMENT | st.just("sku")), query)
    return Case("GET", "/api/prefixes" if route == "prefixes" else "/api/promoters")


@st.composite
def write_cases(draw: Callable[..., Any]) -> Case:
    """Writes with odd JSON bodies (and sometimes an odd Content-Encoding)."""
    route = draw(
        st.sampled_from(
            ["put", "put", "batch", "batch", "delete", "enterprise", "patch", "promoter", "auditor", "template"]
        )
    )
    encoding = draw(ENCODING)
    compress = draw(st.booleans())
    if route == "put":
        values = st.lists(near_valid_value() | VALUE, max_size=3)
        body = draw(st.one_of(st.fixed_dictionaries({"values": values}), ANY_JSON))
        query = [("index", draw(NUMBER_TEXT))] if draw(st.booleans()) else []
        query += [("overwrite", "false")] if draw(st.booleans()) else []
        handle = draw(st.sampled_from([f"{NODE_PREFIX}/fuzz", f"{NODE_PREFIX}.1001/fuzz"]))
        return Case("PUT", f"/api/handles/{handle}", query, body, "json", encoding, compress)
    if route == "batch":
        values = st.lists(near_valid_value() | VALUE, max_size=2)
        item = st.fixed_dictionaries({"handle": HANDLE, "values": values}) | ANY_JSON
        items = draw(st.lists(item, min_size=1, max_size=4))
        kind = draw(st.sampled_from(["ndjson", "jsonarray", "msgpack"]))
        query = [("atomic", draw(st.sampled_from(["true", "false"])))]
        return Case("POST", "/api/handles", query, items, kind, encoding, compress)
    if route == "delete":
        query = [("index", draw(NUMBER_TEXT)) for _ in range(draw(st.integers(0, 2)))]
        return Case("DELETE", "/api/handles/" + quote(draw(HANDLE), safe="/"), query)
    if route == "auditor":
        body = draw(st.fixed_dictionaries({"name": SCALAR}) | ANY_JSON)
        return Case("POST", "/api/auditors", [], body, "json", encoding, compress)
    if route == "enterprise":
        body = draw(
            st.fixed_dictionaries(
                {"name": st.just("Fuzz Co") | SCALAR, "uscc": st.just(make_uscc(900)) | SCALAR, "promoter": SCALAR},
                optional={"prefix": SCALAR},
            )
        )
        return Case("POST", "/api/enterprises", [], body, "json", encoding, compress)
    if route == "patch":
        body = draw(st.fixed_dictionaries({}, optional={"promoter": SCALAR, "status": SCALAR}) | ANY_JSON)
        return Case("PATCH", "/api/enterprises/" + draw(SEGMENT | st.just("1")), [], body, "json", encoding, compress)
    if route == "promoter":
        body = draw(st.fixed_dictionaries({"name": SCALAR, "uscc": SCALAR}) | ANY_JSON)
        return Case("POST", "/api/promoters", [], body, "json", encoding, compress)
    field_ = st.fixed_dictionaries(
        {},
        optional={
            "index": SCALAR,
            "name": SCALAR,
            "type": SCALAR,
            "min_length": SCALAR,
            "max_length": SCALAR,
            "pattern": SCALAR,
            "enum": ANY_JSON,
        },
    )
    body = draw(
        st.fixed_dictionaries(
            {"id": st.just("fz") | SCALAR, "fields": st.lists(field_, max_size=2) | SCALAR},
            optional={"prefix": st.just(f"{NODE_PREFIX}.1001") | SCALAR, "description": SCALAR},
        )
    )
    if draw(st.booleans()):
        return Case("POST", "/api/templates", [], body, "json", encoding, compress)
    return Case("PUT", "/api/templates/" + draw(SEGMENT | st.just("fz")), [], body, "json", encoding, compress)


RAW_BODY = st.builds(
    lambda data, enc: Case("PUT", f"/api/handles/{NODE_PREFIX}/raw", [], data, "raw", enc, False),
    st.binary(max_size=40),
    ENCODING,
)


# -- the node ---------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def node(request: pytest.FixtureRequest) -> Iterator[tuple[asyncio.AbstractEventLoop, TestClient]]:
    """One node on a loop of its own, so hypothesis can drive it from a plain function."""
    loop = asyncio.new_event_loop()
    directory = tempfile.TemporaryDirectory()
    os.environ["IDNODE_ADMIN_SECRET"] = ADMIN_SECRET
    store = f"sqlite:///{directory.name}/idnode.db"
    if request.param == "postgresql":
        store = request.getfixturevalue("pg_store_url")
    config = load_config(env={}, overrides={"data_dir": directory.name, "store": store})

    async def start() -> TestClient:
        client = TestClient(TestServer(create_app(config)))
        await client.start_server()
        return client

    client = loop.run_until_complete(start())

    async def setup() -> None:  # an enterprise (88.118.8.1001) and a handle to fuzz
        r = await client.post("/api/promoters", json={"name": "P", "uscc": make_uscc(1, "92")}, headers=ADMIN)
        assert r.status == 201, await r.text()
        body = {"name": "E", "uscc": make_uscc(1), "promoter": (await r.json())["id"]}
        r = await client.post("/api/enterprises", json=body, headers=ADMIN)
        assert r.status == 201, await r.text()
        r = await client.put(
            f"/api/handles/{NODE_PREFIX}/fuzz",
            json={"values": [{"index": 1, "type": "URL", "data": "x"}]},
            headers=ADMIN,
        )
        assert r.status == 201, await r.text()

    loop.run_until_complete(setup())
    try:
        yield loop, client
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        directory.cleanup()
        os.environ.pop("IDNODE_ADMIN_SECRET", None)


def _url(client: TestClient, case: Case) -> Any:
    url = client.make_url(case.path)
    return url.with_query(case.query) if case.query else url


def _fits(client: TestClient, case: Case) -> bool:
    """Whether the request line stays under aiohttp's 8,190 bytes: longer ones are refused by the
    HTTP parser before the app sees them (malformed HTTP, not this test's subject)."""
    return len(str(_url(client, case).raw_path_qs)) < 8000


async def _send(client: TestClient, case: Case, credentials: bool) -> None:
    headers = dict(ADMIN) if credentials else {}
    data = None
    if case.body is not None:
        data, ctype = _encode(case)
        headers["Content-Type"] = ctype
        if case.encoding is not None:
            headers["Content-Encoding"] = case.encoding
            if case.compress:
                data = _compressed(data, case.encoding)
    async with client.session.request(case.method, _url(client, case), data=data, headers=headers) as r:
        text = await r.text(errors="replace")
        where = f"{case.method} {case.path[:200]} {str(case.query)[:200]} ({'admin' if credentials else 'anonymous'})"
        assert r.status < 500, f"{where} → {r.status}: {text[:300]}"
        assert r.content_type == "application/json", f"{where} → {r.status} {r.content_type}: {text[:300]}"
        body = json.loads(text)
        assert isinstance(body, dict) and isinstance(body.get("responseCode"), int), f"{where} → {text[:300]}"
        assert "for the store" not in text and "conflicting data" not in text, f"{where} → {text[:300]}"
        if r.status >= 400:
            assert body["responseCode"] != 1 and isinstance(body.get("message"), str), f"{where} → {text[:300]}"


FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


def test_fuzz_reads_never_5xx(node: tuple[asyncio.AbstractEventLoop, TestClient]) -> None:
    loop, client = node

    @FUZZ
    @given(case=read_cases(), credentials=st.booleans())
    def check(case: Case, credentials: bool) -> None:
        assume(_fits(client, case))
        loop.run_until_complete(_send(client, case, credentials))

    check()


def test_fuzz_writes_never_5xx(node: tuple[asyncio.AbstractEventLoop, TestClient]) -> None:
    loop, client = node

    @settings(FUZZ, max_examples=EXAMPLES * 3)
    @given(case=write_cases() | RAW_BODY, credentials=st.sampled_from([True, True, True, False]))
    def check(case: Case, credentials: bool) -> None:
        assume(_fits(client, case))
        loop.run_until_complete(_send(client, case, credentials))

    check()
