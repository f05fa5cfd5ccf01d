"""Malformed credentials get a clear 401 JSON error, never a 500 (issue 10 §4 items 2 and 3), and the
access log parses Basic the same way authentication does."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from registry.auth import Identity
from registry.errors import InvalidCredential
from resolver.http.access import claimed_identity
from resolver.http.credentials import parse_basic

PROBE = "/api/handles/88.118.8/probe"
SECRET = "the-secret-never-echoed"
LONG_INDEX = "9" * 5000


def raw_basic(user_pass: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_pass.encode()).decode()}


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"access_log": True}  # the access log parses every Authorization header too


BAD_USERS = [
    f"²:0.NA/88.118.8:{SECRET}",  # a Unicode digit where the index goes, sent raw
    f"%C2%B2%3A0.NA%2F88.118.8:{SECRET}",  # the same, percent-encoded as pyhandle does
    f"{LONG_INDEX}:0.NA/88.118.8:{SECRET}",  # an overlong index
    f"{LONG_INDEX}%3A0.NA%2F88.118.8:{SECRET}",
    f"0:0.NA/88.118.8:{SECRET}",  # out of range
    f"4294967296%3A0.NA%2F88.118.8:{SECRET}",
    f"%C0%AF:{SECRET}",  # percent-decodes to invalid UTF-8
    f"300%3A%FF%FE:{SECRET}",
    f"%ZZ:{SECRET}",
    f"300%3A0.NA%2F:{SECRET}",  # no handle after the prefix
]


@pytest.mark.parametrize("user_pass", BAD_USERS)
async def test_malformed_basic_identities_get_401_json(client: TestClient, user_pass: str) -> None:
    for method in ("get", "put", "delete"):
        kwargs: dict[str, Any] = {"json": []} if method == "put" else {}
        r = await getattr(client, method)(PROBE, headers=raw_basic(user_pass), **kwargs)
        text = await r.text()
        assert r.status == 401, text
        body = json.loads(text)
        assert body["responseCode"] == 402 and body["message"], body
        assert SECRET not in text and LONG_INDEX not in text
        assert [c.split(" ", 1)[0] for c in r.headers.getall("WWW-Authenticate")] == ["Basic", "Handle"]


@pytest.mark.parametrize(
    "ident",
    ["²:0.NA/88.118.8", "%C2%B2%3A0.NA%2F88.118.8", f"{LONG_INDEX}:0.NA/88.118.8", "%C0%AF", "%C0%AF:x", "300:"],
)
async def test_malformed_ids_in_a_handle_answer_get_401_json(client: TestClient, ident: str) -> None:
    opened = await (await client.post("/api/sessions")).json()
    header = (
        f'Handle sessionId="{opened["sessionId"]}", id="{ident}", type="HS_PUBKEY", cnonce="AAAA", alg="SHA256", '
        'signature="AAAA"'
    )
    for path in ("/api/sessions/this", PROBE):
        r = await client.put(path, json=[], headers={"Authorization": header})
        text = await r.text()
        assert r.status == 401, text
        assert json.loads(text)["responseCode"] == 402
        assert LONG_INDEX not in text


@pytest.mark.parametrize("user_pass", BAD_USERS)
def test_one_parser_for_authentication_and_the_access_log(user_pass: str) -> None:
    header = raw_basic(user_pass)["Authorization"]
    with pytest.raises(InvalidCredential):
        Identity.parse(parse_basic(header.partition(" ")[2]).identity)
    assert claimed_identity(header) is None


def test_parse_basic_shapes() -> None:
    assert parse_basic(base64.b64encode(b"300%3A0.NA%2F88.118.8:s:3").decode()).identity == "300:0.NA/88.118.8"
    raw = parse_basic(base64.b64encode(b"300:0.NA/88.118.8:s:3").decode())
    assert (raw.identity, raw.secret) == ("300:0.NA/88.118.8", "s:3")
    for bad in ("!!!", base64.b64encode(b"no-colon").decode(), base64.b64encode(b"\xff:x").decode()):
        with pytest.raises(InvalidCredential):
            parse_basic(bad)
