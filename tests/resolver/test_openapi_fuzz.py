"""Schemathesis against a live node: every operation of ``resolver/http/openapi.json``, fuzzed.

A real ``idnode serve`` on SQLite with onboarded data (a promoter, an enterprise, identifiers, a
template, an auditor), so that generated requests resolve, overwrite and delete real records. Every
operation is run twice: first with the node administrator's Basic credentials (explicit examples,
coverage and fuzzing phases), then anonymously, reading back what the administrator wrote
(schemathesis makes up credentials of its own for the operations that declare them, so the parsing
of Authorization is fuzzed too; the coverage phase runs only where anonymous requests get past the
credentials check). The guess throttle counts failed credentials per identity and client address:
the anonymous run comes from another address (a trusted ``X-Forwarded-For``), so its made-up
credentials may earn it 429s (checked against the document like any answer) but never lock the
administrator out (checked at the end). Native messages over HTTP (``POST /{handle}``) are built
with the node's codec: resolutions, site info, an unsupported operation, corrupted and raw bytes.

The run is seeded and deterministic (the same requests every time for a given schemathesis and
Hypothesis version), bounded by the number of cases (``MAX_EXAMPLES`` per operation in the fuzzing
phase, plus the examples and coverage phases) and by a timeout per request. It fails on:

- any 5xx (``not_a_server_error``);
- a status code, a Content-Type, a body or a header the document does not describe for that
  operation (``status_code_conformance``, ``content_type_conformance``,
  ``response_schema_conformance``, ``response_headers_conformance``);
- an operation that declares credentials required but answers 2xx without them
  (``ignored_auth``, with the administrator's credentials).

Left out, on purpose: ``positive_data_acceptance`` (a schema-valid request must succeed) — the
document describes shapes, while the node also checks meaning: credit codes, handle syntax, rights,
existing records; a syntactically valid but unknown handle is rightly a 404, a random credit code a
400. ``negative_data_rejection`` (a schema-invalid request must be refused) — the node is as lenient
as HANDLE.NET where HANDLE.NET is (flags take any value, numbers may arrive as digit strings).
No operation is excluded: ``/metrics``, ``/bureau``, the CSV and XLSX tallies, ``/api/docs``, the
spec and native messages are text, HTML or bytes whose status and Content-Type are still checked.

``NASTY_STRINGS`` and ``NASTY_INTEGERS`` (inputs that made the node answer 500 before: Unicode
digits, 5,000-digit numbers, out-of-range instants and ids) are mixed into generated strings and
integers, where the schema allows them and, in negative cases, where it does not.

Answers the document describes but random requests seldom provoke (415, a guesser's 401s then 429,
JSONP with credentials, a request line over 8,190 bytes, CSV/XLSX tallies, the pages' HTML errors,
an oversized native message, a handle's URL asked for a linkset or JSON by ``Accept``) are made by
hand in ``test_answers_generated_requests_rarely_reach`` and checked with the same checks.

A failure prints the request as a curl command line. The summary (requests and statuses per
identity and operation) is printed by the last test: ``pytest -rA tests/resolver/test_openapi_fuzz.py``.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, unquote

import msgpack
import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from resolver.http.api_docs import spec
from resolver.native.codec import (
    ENVELOPE_SIZE,
    MAX_MESSAGE,
    OC_CREATE_HANDLE,
    CodecError,
    GetSiteInfoRequest,
    RawBody,
    ResolutionRequest,
    encode_message,
    make_request,
)
from resolver.native.http import HDL_MIME_TYPE
from tests.conftest import ADMIN_SECRET
from tests.nodeproc import NodeProcess
from tests.resolver.test_challenge_auth import answer, jwk_of

NODE_PREFIX_HANDLE = "0.NA/88.118.8"
NODE_ADMIN = f"300:{NODE_PREFIX_HANDLE}"
ENTERPRISE = "88.118.8.1001"  # the first enterprise prefix the node allocates
KNOWN_HANDLES = [f"{ENTERPRISE}/SKU-{n}" for n in range(1, 13)]
GS1_PREFIX, GTIN = "6901234", "06901234567892"  # the enterprise's GS1 company prefix and a GTIN of it
MAX_EXAMPLES = 25  # per operation and identity in the fuzzing phase
SEED = 20261204
NASTY_STRINGS = [
    "²",
    "١٢٣",
    "9" * 5000,
    "99999999999999999999",
    "-1",
    "1_000",
    " 7",
    "%C0%AF",
    "²:5",
    "1:²",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-12:00",
    NODE_PREFIX_HANDLE,
    f"{ENTERPRISE}/SKU-1",
    "300:0.NA/88.118.8",
]
NASTY_INTEGERS = [0, -1, 2**31, 2**32, 2**63, 2**64, 10**30, 10**4400]


def _config(**extra: Any) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "request-timeout": 20,
            "generation": {
                "deterministic": True,
                "max-examples": MAX_EXAMPLES,
                "database": "none",
                # A failure is reported as found, with a curl line to reproduce it; shrinking it
                # would make a failing run many times longer.
                "no-shrink": True,
                "dictionaries": {
                    "string": {"dictionary": "nasty-strings", "probability": 0.1},
                    "integer": {"dictionary": "nasty-integers", "probability": 0.1},
                },
            },
            "dictionaries": {
                "nasty-strings": {"values": NASTY_STRINGS},
                "nasty-integers": {"values": NASTY_INTEGERS},
            },
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
                "response_headers_conformance": {"enabled": True},
                "ignored_auth": {"enabled": True},
            },
            **extra,
        }
    )


def _credentials_required() -> list[str]:
    return [
        operation["operationId"]
        for item in spec()["paths"].values()
        for operation in item.values()
        if {} not in operation["security"]
    ]


# The administrator gets every phase: explicit examples, coverage (boundary and invalid values of each
# parameter and property in turn) and fuzzing. Anonymous requests to an operation that requires
# credentials stop at the credentials check, so there the coverage phase would mostly repeat one
# refusal: anonymous runs it only where anonymous requests go further.
ADMIN_SCHEMA = schemathesis.openapi.from_dict(spec(), config=_config())
ANONYMOUS_SCHEMA = schemathesis.openapi.from_dict(
    spec(),
    config=_config(
        operations=[{"include-operation-id": _credentials_required(), "phases": {"coverage": {"enabled": False}}}]
    ),
)

# What the run did, per identity and operation: statuses answered (printed, and checked at the end).
STATUSES: dict[str, Counter[int]] = defaultdict(Counter)
TIMING: dict[str, float] = {}


def basic(identity: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{quote(identity, safe='')}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# The guess throttle counts failed credentials per identity and client address (README, "Throttle").
# The anonymous run sends made-up Authorization headers, some of them again and again, and may name
# the administrator's identity (it is among NASTY_STRINGS): it may trip the throttle, and its 429s
# are checked against the document like any answer. The node trusts loopback as a reverse proxy and the
# anonymous run comes "from" a documentation address through X-Forwarded-For, so its failures are
# counted under that address and never lock out the administrator, whose requests come from
# 127.0.0.1 itself (as the rightful holder elsewhere is never locked out by a guesser). The
# administrator also runs first; test_fuzzing_reached_the_data checks it was never answered 429.
ANONYMOUS_ADDRESS = "192.0.2.7"  # TEST-NET-1 (RFC 5737)
NODE_ENV = {"IDNODE_TRUSTED_PROXIES": "127.0.0.1", "IDNODE_JOB_MAX_BYTES": "100000"}
IDENTITIES: dict[str, dict[str, str]] = {
    "anonymous": {"X-Forwarded-For": ANONYMOUS_ADDRESS},
    "node-admin": basic(NODE_ADMIN, ADMIN_SECRET),
}


# ------------------------------------------------------------------------------ request bodies


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: schemathesis.SerializationContext, value: Any) -> dict[str, bytes]:
    items = value if isinstance(value, list) else [value]
    return {"data": "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items).encode()}


@schemathesis.serializer("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
def _xlsx(ctx: schemathesis.SerializationContext, value: Any) -> dict[str, bytes]:
    """A job's XLSX file: the generated bytes as they are (mostly not a workbook: refused with 400)."""
    return {"data": value if isinstance(value, bytes) else str(value).encode()}


def _msgpack_able(value: Any) -> Any:
    """msgpack carries integers of at most 64 bits: a larger one goes as its digits (which the node
    must refuse or read as any client's digit string)."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, list):
        return [_msgpack_able(v) for v in value]
    if isinstance(value, dict):
        return {k: _msgpack_able(v) for k, v in value.items()}
    return value


@schemathesis.serializer("application/msgpack")
def _msgpack(ctx: schemathesis.SerializationContext, value: Any) -> dict[str, bytes]:
    return {"data": msgpack.packb(_msgpack_able(value))}


def _native_message(body: Any, request_id: int, opcode: int | None = None) -> bytes:
    """Envelope and message as HANDLE.NET's client sends them; a handle the codec cannot carry
    (too long) goes as raw bytes."""
    try:
        return encode_message(make_request(body, request_id=request_id, opcode=opcode))
    except CodecError:
        return b"\x02\x0a" + bytes(18)


def _corrupt(message: bytes, position: int, byte: int) -> bytes:
    at = position % len(message)
    return message[:at] + bytes([byte]) + message[at + 1 :]


_request_ids = st.integers(min_value=0, max_value=2**31 - 1)
_native_requests = st.one_of(
    st.builds(
        lambda handle, indexes, types, rid: _native_message(ResolutionRequest(handle, indexes, types), rid),
        st.one_of(st.sampled_from([*KNOWN_HANDLES, NODE_PREFIX_HANDLE, f"0.NA/{ENTERPRISE}"]), st.text(max_size=40)),
        st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=3).map(tuple),
        st.lists(st.sampled_from(["URL", "EMAIL", "HS_SITE.", "HS_ADMIN", "HS_SECKEY"]), max_size=2).map(tuple),
        _request_ids,
    ),
    st.builds(lambda rid: _native_message(GetSiteInfoRequest(), rid), _request_ids),
    st.builds(
        lambda data, rid: _native_message(RawBody(data), rid, OC_CREATE_HANDLE), st.binary(max_size=64), _request_ids
    ),
)
# Native messages over HTTP: requests the node answers (resolutions, site info, an administrative
# operation it does not support), the same with one byte changed, and bytes that are no message.
schemathesis.openapi.media_type(
    HDL_MIME_TYPE,
    st.one_of(
        _native_requests,
        st.builds(_corrupt, _native_requests, st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        st.binary(max_size=96),
    ),
)

# Handles: mostly real records and well-formed names under the enterprise's prefix, prefix handles,
# some noise.
schemathesis.openapi.format(
    "handle",
    st.one_of(
        st.sampled_from(KNOWN_HANDLES),
        st.builds(lambda s: f"{ENTERPRISE}/{s}", st.text(min_size=1, max_size=20)),
        st.sampled_from([f"0.NA/{ENTERPRISE}", NODE_PREFIX_HANDLE]),
        st.text(min_size=1, max_size=30),
    ),
)
schemathesis.openapi.format("handle-prefix", st.one_of(st.just(ENTERPRISE), st.text(max_size=20)))


# ------------------------------------------------------------------------------ the node


def _send(url: str, method: str, body: object, headers: dict[str, str] | None) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A node with data to hit: promoter 1, enterprise 1 (88.118.8.1001) with a GS1 company prefix,
    identifiers (one of them a GTIN's), a template and an auditor."""
    proc = NodeProcess(tmp_path_factory.mktemp("openapi-fuzz"), env=NODE_ENV).wait_ready()
    admin = IDENTITIES["node-admin"]
    try:
        _send(f"{proc.url}/api/promoters", "POST", {"name": "Promoter", "uscc": "91350100M000100Y43"}, admin)
        enterprise = {"name": "Enterprise", "uscc": "91440300708461136T", "promoter": 1}
        assert _send(f"{proc.url}/api/enterprises", "POST", enterprise, admin)["prefix"] == ENTERPRISE
        template = {"id": "sku-basic", "fields": [{"index": 2001, "name": "batch", "type": "BATCH_NO"}]}
        _send(f"{proc.url}/api/templates", "POST", template, admin)
        _send(f"{proc.url}/api/auditors", "POST", {"name": "baiyun"}, admin)
        _send(f"{proc.url}/api/enterprises/{ENTERPRISE}/gs1-prefixes/{GS1_PREFIX}", "PUT", None, admin)
        gs1_item = {"values": [{"index": 1, "type": "URL", "data": "https://trace.example.com/gtin"}]}
        _send(f"{proc.url}/api/handles/{ENTERPRISE}/01/{GTIN}", "PUT", gs1_item, admin)
        for n, handle in enumerate(KNOWN_HANDLES):
            values = [
                {"index": 1, "type": "URL", "data": f"https://trace.example.com/{n}"},
                {"index": 2, "type": "EMAIL", "data": "qa@example.com", "permissions": "1100"},
            ]
            _send(f"{proc.url}/api/handles/{handle}", "PUT", {"values": values}, admin)
        TIMING["started"] = time.monotonic()
        yield proc
    finally:
        proc.stop()


# ------------------------------------------------------------------------------ the fuzzing


def _is_node_prefix_handle(value: object) -> bool:
    """Path parameters arrive percent-encoded (schemathesis quotes them as it generates them)."""
    return isinstance(value, str) and unquote(value).strip().upper() == NODE_PREFIX_HANDLE


def _spare_node_prefix_handle(case: schemathesis.Case) -> None:
    """The administrator may replace the node's own prefix handle or delete some of its values (only
    deleting the whole handle is refused), as in HANDLE.NET; a generated write there (a PUT, a DELETE
    with ``index``, a batch item with ``overwrite``) would replace or drop the administrator's own key
    or HS_ADMIN and lock the rest of the run out (every later request 401, then 429). Such writes go to
    the enterprise's prefix handle instead; reads, and attempts to delete the whole handle, go where
    they were meant to."""
    spare = f"0.NA/{ENTERPRISE}"
    handle = (case.path_parameters or {}).get("handle")
    writes = case.method == "PUT" or (case.method == "DELETE" and (case.query or {}).get("index") not in (None, []))
    if case.operation.path == "/api/handles/{handle}" and _is_node_prefix_handle(handle) and writes:
        case.path_parameters["handle"] = quote(spare, safe="")
    if case.operation.path == "/api/handles" and case.method == "POST":
        items = case.body if isinstance(case.body, list) else [case.body]
        for item in items:
            if isinstance(item, dict) and _is_node_prefix_handle(item.get("handle")):
                item["handle"] = spare


@contextmanager
def _any_integer_as_text() -> Iterator[None]:
    """Python refuses to write an int of more than 4,300 digits as text; a client in another language
    sends it (in a query or a JSON body) and the node must refuse it. Lifted on this side only while a
    request is written and checked: the node is another process and keeps its own limit."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(limit)


def _call_and_validate(case: schemathesis.Case, node: NodeProcess, who: str) -> None:
    headers = IDENTITIES[who]
    _spare_node_prefix_handle(case)
    with _any_integer_as_text():
        response = case.call(base_url=node.url, headers=headers)
        STATUSES[f"{who:10} {case.operation.label}"][response.status_code] += 1
        sent = {"base_url": node.url, "headers": headers}
        case.validate_response(response, headers=headers, transport_kwargs=sent)


# The administrator runs first: its writes (values of every shape, TTLs, permissions) then stand in
# the records the anonymous run reads back, so a write that is accepted but cannot be read shows.
@ADMIN_SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_node_admin(case: schemathesis.Case, node: NodeProcess) -> None:
    _call_and_validate(case, node, "node-admin")


@ANONYMOUS_SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_anonymous(case: schemathesis.Case, node: NodeProcess) -> None:
    _call_and_validate(case, node, "anonymous")


# ------------------------------------------------------------------------------ answers fuzzing rarely reaches

GUESSER = {"X-Forwarded-For": "198.51.100.23"}  # TEST-NET-2: a client other than the administrator


def _explicit(node: NodeProcess, path: str, method: str, headers: dict[str, str], **case: Any) -> Any:
    """One request made by hand, checked against the document with the fuzzing's checks."""
    built = ADMIN_SCHEMA[path][method].Case(**case)
    with _any_integer_as_text():
        response = built.call(base_url=node.url, headers=headers)
        built.validate_response(response, headers=headers, transport_kwargs={"base_url": node.url, "headers": headers})
    return response


def _header(response: Any, name: str) -> str:
    values = response.headers.get(name.lower(), [])
    return values[0] if values else ""


def test_answers_generated_requests_rarely_reach(node: NodeProcess) -> None:
    """Answers the document describes that random requests seldom or never provoke: each is made by
    hand and checked like a fuzzed one (status, Content-Type, headers and body as documented)."""
    admin = IDENTITIES["node-admin"]
    sku = quote(f"{ENTERPRISE}/by-hand", safe="")  # its own record: the fuzzing may have deleted any other
    value = {"values": [{"index": 1, "type": "URL", "data": "https://trace.example.com/0"}]}
    path_handle = "/api/handles/{handle}"
    enterprise = {"ref": ENTERPRISE}
    r = _explicit(node, "/api/enterprises/{ref}", "PATCH", admin, path_parameters=enterprise, body={"status": "active"})
    assert r.status_code == 200  # the fuzzing may have disabled it
    prefix_handle = {"handle": quote(f"0.NA/{ENTERPRISE}", safe="")}
    if _explicit(node, path_handle, "GET", admin, path_parameters=prefix_handle).status_code == 404:
        # The fuzzing may have deleted the enterprise's prefix handle (the administrator may): without it
        # nothing can be written under the prefix. The administrator makes it again (its default HS_ADMIN).
        r = _explicit(node, path_handle, "PUT", admin, path_parameters=prefix_handle, body={"values": []})
        assert r.status_code == 201
    r = _explicit(node, path_handle, "PUT", admin, path_parameters={"handle": sku}, body=value)
    assert r.status_code in (200, 201), r.text

    r = _explicit(
        node, path_handle, "PUT", {**admin, "Content-Encoding": "br"}, path_parameters={"handle": sku}, body=value
    )
    assert r.status_code == 415 and _header(r, "Accept-Encoding") == "gzip, deflate"
    r = _explicit(node, path_handle, "GET", admin, path_parameters={"handle": sku}, query={"callback": "show"})
    assert r.status_code == 400 and r.json()["responseCode"] == 4  # JSONP is for anonymous requests only
    r = _explicit(node, "/api/promotion/tallies", "GET", admin, query={"from": "9" * 9000})
    assert r.status_code == 400 and r.json()["responseCode"] == 4  # refused by the HTTP parser, as JSON

    # Guessing the administrator's secret from another address: 401 with both challenges, then 429.
    guess = {**GUESSER, **basic(NODE_ADMIN, "not-the-secret")}
    refused = [_explicit(node, "/api/promoters", "GET", guess) for _ in range(10)]
    assert [r.status_code for r in refused] == [401] * 10 and refused[0].json()["responseCode"] == 402
    challenges = ",".join(refused[0].headers.get("www-authenticate", []))
    assert 'Basic realm="idnode"' in challenges and "Handle sessionId=" in challenges
    r = _explicit(node, "/api/promoters", "GET", guess)
    assert r.status_code == 429 and int(_header(r, "Retry-After")) > 0 and r.json()["responseCode"] == 3
    assert _explicit(node, "/api/promoters", "GET", admin).status_code == 200  # the holder is not locked out

    r = _explicit(node, "/api/auditors/{name}", "DELETE", admin, path_parameters={"name": "no-such-auditor-3c9e1f"})
    assert r.status_code == 404
    for fmt, ctype in (("csv", "text/csv"), ("xlsx", "application/vnd.openxmlformats")):
        r = _explicit(node, "/api/promotion/tallies", "GET", admin, query={"format": fmt, "lang": "en"})
        assert r.status_code == 200 and _header(r, "Content-Type").startswith(ctype)
        assert len(_header(r, "X-Report-SHA256")) == 64
    r = _explicit(node, "/bureau", "GET", admin, query={"from": "2026-13-01"})
    assert r.status_code == 400 and _header(r, "Content-Type").startswith("text/html")
    r = _explicit(node, "/bureau/promoters/{promoter}", "GET", admin, path_parameters={"promoter": "999999999"})
    assert r.status_code == 404 and _header(r, "Content-Type").startswith("text/html")

    # A challenge-response session: answered, it gets a new id (in the body and WWW-Authenticate).
    key = ed25519.Ed25519PrivateKey.generate()
    holder = f"{ENTERPRISE}/session-key"
    key_value = {"values": [{"index": 300, "type": "HS_PUBKEY", "data": {"format": "key", "value": jwk_of(key)}}]}
    r = _explicit(node, path_handle, "PUT", admin, path_parameters={"handle": quote(holder, safe="")}, body=key_value)
    assert r.status_code in (200, 201)
    opened = _explicit(node, "/api/sessions", "POST", {}).json()
    signed = {"Authorization": answer(opened["sessionId"], opened["nonce"], f"300:{holder}", key)}
    r = _explicit(node, "/api/sessions/this", "PUT", signed)
    state = r.json()
    assert r.status_code == 200 and state["authenticated"] and state["sessionId"] != opened["sessionId"]
    assert _header(r, "WWW-Authenticate").startswith(f'Handle sessionId="{state["sessionId"]}"')
    old_id, new_id = (
        {"Authorization": f'Handle sessionId="{sid}"'} for sid in (opened["sessionId"], state["sessionId"])
    )
    assert _explicit(node, "/api/sessions/this", "GET", old_id).status_code == 401
    assert _explicit(node, "/api/sessions/this", "GET", new_id).status_code == 200
    r = _explicit(node, "/api/sessions/this", "DELETE", new_id)
    assert r.status_code == 200 and r.json() == {"sessionId": state["sessionId"], "authenticated": False}

    # A handle's URL as people and apps ask for it: redirect, page, linkset, JSON; errors as pages and as JSON.
    proxy, by_hand = "/{handle}", {"handle": sku}
    r = _explicit(node, proxy, "GET", {}, path_parameters=by_hand)
    assert r.status_code == 302 and _header(r, "Location") == "https://trace.example.com/0"
    r = _explicit(node, proxy, "GET", {}, path_parameters=by_hand, query={"noredirect": ""})
    assert r.status_code == 200 and _header(r, "Content-Type").startswith("text/html")
    r = _explicit(node, proxy, "GET", {"Accept": "application/linkset+json"}, path_parameters=by_hand)
    assert r.status_code == 200 and r.json()["linkset"][0]["describedby"] == [{"href": "https://trace.example.com/0"}]
    unknown = {"handle": quote(f"{ENTERPRISE}/no-such-code", safe="")}
    r = _explicit(node, proxy, "GET", {"Accept": "application/json"}, path_parameters=unknown)
    assert r.status_code == 404 and r.json()["responseCode"] == 100
    r = _explicit(node, proxy, "GET", {}, path_parameters={"handle": quote("86.100.1/X", safe="")})
    assert r.status_code == 400 and _header(r, "Content-Type").startswith("text/html")
    r = _explicit(node, "/", "GET", {}, query={"hdl": f"{ENTERPRISE}/by-hand", "noredirect": "1"})
    assert r.status_code == 303 and _header(r, "Location") == f"/{ENTERPRISE}/by-hand?noredirect"

    # GS1 Digital Link: a redirect, refusals as pages and as JSON, a CORS preflight, the description.
    gs1 = {"ref": ENTERPRISE, "company_prefix": GS1_PREFIX}
    r = _explicit(node, "/api/enterprises/{ref}/gs1-prefixes/{company_prefix}", "PUT", admin, path_parameters=gs1)
    assert r.status_code in (200, 201)  # the fuzzing may have removed it
    gs1_item = {"values": [{"index": 1, "type": "URL", "data": "https://trace.example.com/gtin"}]}
    r = _explicit(node, path_handle, "PUT", admin, path_parameters={"handle": f"{ENTERPRISE}/01/{GTIN}"}, body=gs1_item)
    assert r.status_code in (200, 201)
    r = _explicit(node, "/01/{gtin}/{qualifiers}", "GET", {}, path_parameters={"gtin": GTIN, "qualifiers": "10"})
    assert r.status_code == 400 and _header(r, "Content-Type").startswith("text/html")
    r = _explicit(node, "/01/{gtin}", "GET", {}, path_parameters={"gtin": GTIN})
    assert r.status_code == 302 and _header(r, "Location") == "https://trace.example.com/gtin"
    r = _explicit(node, "/01/{gtin}", "GET", {"Accept": "application/json"}, path_parameters={"gtin": "05012345678900"})
    assert r.status_code == 404 and r.json()["responseCode"] == 100
    r = _explicit(node, "/01/{gtin}", "OPTIONS", {}, path_parameters={"gtin": GTIN})
    assert r.status_code == 204 and _header(r, "Access-Control-Allow-Origin") == "*"
    r = _explicit(node, "/.well-known/gs1resolver", "GET", {})
    assert r.status_code == 200 and r.json()["resolverRoot"] == node.url

    # A job: queued (202), read back (200) with its rejected rows (JSON and CSV); a file too large (413);
    # the reverse lookup finds the identifiers; the audit log has their onboarding.
    job_body = "suffix,URL\nJOB-1,https://trace.example.com/job\nJOB-2\n"
    prefix = {"prefix": ENTERPRISE}
    r = _explicit(node, "/api/jobs", "POST", admin, query=prefix, body=job_body, media_type="text/csv")
    assert r.status_code == 202 and _header(r, "Location") == r.json()["status_url"]
    job_id = {"id": r.json()["id"]}
    for _ in range(200):
        r = _explicit(node, "/api/jobs/{id}", "GET", admin, path_parameters=job_id)
        if r.json()["state"] in ("done", "failed"):
            break
        time.sleep(0.05)
    assert r.status_code == 200 and r.json()["state"] == "done" and r.json()["rejected"] == 1
    r = _explicit(node, "/api/jobs/{id}/rejects", "GET", admin, path_parameters=job_id)
    assert r.status_code == 200 and [x["line"] for x in r.json()["rejects"]] == [3]
    r = _explicit(node, "/api/jobs/{id}/rejects", "GET", admin, path_parameters=job_id, query={"format": "csv"})
    assert r.status_code == 200 and _header(r, "Content-Type").startswith("text/csv")
    large = "suffix,URL\n" + "x" * 100_000
    r = _explicit(node, "/api/jobs", "POST", admin, query=prefix, body=large, media_type="text/csv")
    assert r.status_code == 413
    for _ in range(100):  # the value index follows writes in the background
        r = _explicit(node, "/hrls/handles", "GET", admin, query={"URL": "*trace.example.com/job*"})
        if r.json():
            break
        time.sleep(0.1)
    assert r.status_code == 200 and r.json() == [f"{ENTERPRISE}/JOB-1"]
    r = _explicit(node, "/api/audit", "GET", admin, query={"action": "enterprise.add", "target": ENTERPRISE})
    assert r.status_code == 200 and [e["detail"]["uscc"] for e in r.json()["entries"]] == ["91440300708461136T"]

    oversized = bytes(ENVELOPE_SIZE) + bytes(MAX_MESSAGE + 2)  # past the body limit (it allows a leading CR or LF)
    r = _explicit(
        node, "/{handle}", "POST", {}, path_parameters={"handle": "x"}, body=oversized, media_type=HDL_MIME_TYPE
    )
    assert r.status_code == 413


def test_fuzzing_reached_the_data() -> None:
    """Runs after the fuzzing above (same module): it made a few thousand requests, and with the
    administrator's credentials real reads and writes succeeded, so the run went past the checks of
    credentials and syntax. Prints what was asked and answered."""
    if not STATUSES:
        pytest.fail("run the whole module: the fuzzing tests above collect what this checks")
    total = sum(sum(c.values()) for c in STATUSES.values())
    lines = [f"{sum(c.values()):5}  {label}  {dict(sorted(c.items()))}" for label, c in sorted(STATUSES.items())]
    elapsed = time.monotonic() - TIMING["started"]
    print(f"\nschemathesis: {total} requests in {elapsed:.1f} s", *lines, sep="\n")
    assert total >= 2000, total

    def ok(label: str) -> int:
        return sum(n for status, n in STATUSES[label].items() if 200 <= status < 300)

    assert STATUSES and not any(counts[429] for label, counts in STATUSES.items() if label.startswith("node-admin")), (
        "the administrator's own credentials were throttled"
    )
    for operation in (
        "GET /api/handles/{handle}",
        "PUT /api/handles/{handle}",
        "DELETE /api/handles/{handle}",
        "POST /api/handles",
        "GET /api/handles",
        "GET /api/promotion/tallies",
        "GET /bureau",
        "POST /{handle}",
    ):
        assert ok(f"{'node-admin':10} {operation}") > 0, f"no 2xx for the administrator on {operation}"
