"""Typed value data: golden bytes written out from the HANDLE.NET layouts, JSON forms, bad input, fuzz."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.errors import InvalidValue
from registry.model import Reference
from registry.valuedata import (
    ADD_ADMIN,
    ADD_DERIVED_PREFIX,
    ADD_HANDLE,
    ADD_VALUE,
    ALL_PERMS,
    DELETE_DERIVED_PREFIX,
    DELETE_HANDLE,
    IF_ADMIN_AND_QUERY,
    IF_QUERY,
    LIST_HANDLES,
    MODIFY_ADMIN,
    MODIFY_VALUE,
    PROTO_TCP,
    PROTO_UDP,
    READ_VALUE,
    REMOVE_ADMIN,
    REMOVE_VALUE,
    AdminRef,
    Interface,
    ServerInfo,
    SiteInfo,
    admin_from_json,
    admin_to_json,
    data_from_json,
    data_to_json,
    decode_admin,
    decode_public_key,
    decode_site,
    decode_vlist,
    encode_admin,
    encode_public_key,
    encode_site,
    encode_vlist,
    looks_like_binary,
    perm_name,
    perms_from_string,
    perms_to_string,
    public_key_from_jwk,
    public_key_to_jwk,
    site_from_json,
    site_info_from_json,
    site_to_json,
    vlist_from_json,
    vlist_to_json,
)


def h(text: str) -> bytes:
    """Hex with spaces and ``|`` separators for readability."""
    return bytes.fromhex(text.replace("|", " "))


def s(text: str) -> bytes:
    """A UTF-8 string with its 4-byte length, written out."""
    raw = text.encode()
    return struct.pack(">I", len(raw)) + raw


# ---------------------------------------------------------------------------------------------- HS_ADMIN


def test_permission_bits_match_handle_net_admin_record() -> None:
    bits = [
        ADD_HANDLE,
        DELETE_HANDLE,
        ADD_DERIVED_PREFIX,
        DELETE_DERIVED_PREFIX,
        MODIFY_VALUE,
        REMOVE_VALUE,
        ADD_VALUE,
        MODIFY_ADMIN,
        REMOVE_ADMIN,
        ADD_ADMIN,
        READ_VALUE,
        LIST_HANDLES,
    ]
    assert bits == [1 << i for i in range(12)]  # AdminRecord indexes 0..11 ↔ Encoder.PERM_* masks
    assert ALL_PERMS == 0x0FFF == sum(bits)


ADMIN_GOLDEN = h("0f f2 | 00 00 00 0d") + b"0.NA/88.118.8" + h("00 00 00 c8")


def test_encode_admin_golden() -> None:
    assert encode_admin("0.NA/88.118.8", 200, 0x0FF2) == ADMIN_GOLDEN
    assert decode_admin(ADMIN_GOLDEN) == AdminRef("0.NA/88.118.8", 200, 0x0FF2)


def test_admin_json_both_ways() -> None:
    assert admin_to_json(ADMIN_GOLDEN) == {
        "handle": "0.NA/88.118.8",
        "index": 200,
        "permissions": "111111110010",
    }
    # what pyhandle sends: the index as a string
    data = admin_from_json({"handle": "0.NA/88.118.8", "index": "200", "permissions": "011111111111"})
    assert data == h("07 ff | 00 00 00 0d") + b"0.NA/88.118.8" + h("00 00 00 c8")
    assert admin_from_json(admin_to_json(ADMIN_GOLDEN)) == ADMIN_GOLDEN


def test_admin_legacy_trailing_zeros() -> None:
    legacy = ADMIN_GOLDEN + b"\0\0"
    ref = decode_admin(legacy)
    assert ref.legacy and ref.index == 200
    assert admin_to_json(legacy)["legacyByteLength"] is True
    assert admin_from_json(admin_to_json(legacy)) == legacy
    with pytest.raises(InvalidValue, match="unexpected bytes"):
        decode_admin(ADMIN_GOLDEN + b"\0\1")


def test_admin_high_permission_bits_are_dropped() -> None:
    assert decode_admin(h("ff ff") + ADMIN_GOLDEN[2:]).perms == ALL_PERMS


@pytest.mark.parametrize(
    ("text", "perms"),
    [("011111111111", 0x7FF), ("111111111111", ALL_PERMS), ("000000000001", ADD_HANDLE), ("11", 3), ("*", 0xFFF)],
)
def test_perms_from_string(text: str, perms: int) -> None:
    assert perms_from_string(text) == perms


def test_perms_to_string_orders_list_handles_left() -> None:
    assert perms_to_string(LIST_HANDLES) == "100000000000"
    assert perms_to_string(ADD_HANDLE | READ_VALUE) == "010000000001"
    with pytest.raises(InvalidValue):
        perms_to_string(0x1000)


def test_perm_name() -> None:
    assert perm_name(ADD_VALUE) == "ADD_VALUE"
    assert perm_name(ADD_VALUE | REMOVE_VALUE) == "REMOVE_VALUE|ADD_VALUE"
    assert perm_name(ALL_PERMS) == "ALL_PERMS"
    assert perm_name(0) == "none"


@pytest.mark.parametrize("bad", ["", "0121", "1" * 13, "yes", " 11"])
def test_perms_from_string_rejects(bad: str) -> None:
    with pytest.raises(InvalidValue, match="permissions"):
        perms_from_string(bad)


def test_admin_from_json_permission_forms() -> None:
    base = {"handle": "0.NA/1", "index": 300}
    assert decode_admin(admin_from_json({**base, "permissions": True})).perms == ALL_PERMS
    assert decode_admin(admin_from_json({**base, "permissions": False})).perms == 0
    assert decode_admin(admin_from_json({**base, "permissions": 0x40})).perms == ADD_VALUE
    assert decode_admin(admin_from_json(base)).perms == 0


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ("0.NA/1", "must be an object"),
        ({"index": 1}, "'handle'"),
        ({"handle": "", "index": 1}, "'handle'"),
        ({"handle": "0.NA/1"}, "'index' is required"),
        ({"handle": "0.NA/1", "index": "abc"}, "'index' must be a whole number"),
        ({"handle": "0.NA/1", "index": -1}, "'index' must be from 0"),
        ({"handle": "0.NA/1", "index": 2**32}, "'index' must be from 0"),
        ({"handle": "0.NA/1", "index": True}, "boolean"),
        ({"handle": "0.NA/1", "index": 1, "permissions": [1, 0]}, "'permissions'"),
        ({"handle": "0.NA/1", "index": 1, "permissions": 0x1000}, "permissions"),
        ({"handle": "0.NA/1", "index": 1, "permissions": "01x"}, "permissions"),
    ],
)
def test_admin_from_json_rejects(obj: object, match: str) -> None:
    with pytest.raises(InvalidValue, match=match):
        admin_from_json(obj)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        h("0f ff"),
        h("0f ff 00 00 00 10") + b"short",
        h("0f ff 00 00 00 00 00 00 00 01"),
        h("0f ff 00 00 00 01 ff 00 00 00 01"),
    ],
)
def test_decode_admin_rejects(data: bytes) -> None:
    with pytest.raises(InvalidValue, match="HS_ADMIN"):
        decode_admin(data)


# ---------------------------------------------------------------------------------------------- HS_VLIST

VLIST_GOLDEN = h("00 00 00 02") + s("88.118.8/admins") + h("00 00 01 2c") + s("0.NA/88.118.8") + h("00 00 00 c8")


def test_vlist_golden_and_json() -> None:
    refs = [Reference("88.118.8/admins", 300), Reference("0.NA/88.118.8", 200)]
    assert encode_vlist(refs) == VLIST_GOLDEN
    assert decode_vlist(VLIST_GOLDEN) == refs
    assert vlist_to_json(VLIST_GOLDEN) == [
        {"handle": "88.118.8/admins", "index": 300},
        {"handle": "0.NA/88.118.8", "index": 200},
    ]
    assert vlist_from_json(
        [{"handle": "88.118.8/admins", "index": "300"}, {"handle": "0.NA/88.118.8", "index": 200}]
    ) == (VLIST_GOLDEN)
    assert encode_vlist([]) == h("00 00 00 00")


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({"handle": "a/b", "index": 1}, "array"),
        ([1], r"value\[0\] must be an object"),
        ([{"handle": "a/b"}], "'index' is required"),
        ([{"handle": 5, "index": 1}], "'handle'"),
    ],
)
def test_vlist_from_json_rejects(obj: object, match: str) -> None:
    with pytest.raises(InvalidValue, match=match):
        vlist_from_json(obj)


@pytest.mark.parametrize("data", [b"", h("00 00 00 01"), h("ff ff ff ff"), VLIST_GOLDEN + b"\0", VLIST_GOLDEN[:-1]])
def test_decode_vlist_rejects(data: bytes) -> None:
    with pytest.raises(InvalidValue, match="HS_VLIST"):
        decode_vlist(data)


# ---------------------------------------------------------------------------------------------- HS_SITE

SITE_GOLDEN = (
    h("00 01 | 02 0a | 00 01 | 80 | 02")  # format version 1, protocol 2.10, serial 1, primary, hash by all
    + h("00 00 00 00")  # empty hash filter
    + h("00 00 00 01")
    + s("desc")
    + s("test site")  # 1 attribute
    + h("00 00 00 01")  # 1 server
    + h("00 00 00 01")  # server id 1
    + h("00000000 00000000 00000000 0a000001")  # 10.0.0.1 in 16 bytes
    + h("00 00 00 00")  # no public key
    + h("00 00 00 02 | 03 01 00000a51 | 02 00 00000a51")  # adm+qry/TCP/2641, qry/UDP/2641
)
SITE_OBJ = SiteInfo(
    version=1,
    protocol_major=2,
    protocol_minor=10,
    serial=1,
    primary=True,
    attributes=(("desc", "test site"),),
    servers=(
        ServerInfo(
            1,
            ipaddress.IPv4Address("10.0.0.1"),
            b"",
            (Interface(IF_ADMIN_AND_QUERY, PROTO_TCP, 2641), Interface(IF_QUERY, PROTO_UDP, 2641)),
        ),
    ),
)
SITE_JSON = {
    "version": 1,
    "protocolVersion": "2.10",
    "serialNumber": 1,
    "primarySite": True,
    "multiPrimary": False,
    "attributes": [{"name": "desc", "value": "test site"}],
    "servers": [
        {
            "serverId": 1,
            "address": "10.0.0.1",
            "publicKey": {"format": "base64", "value": ""},
            "interfaces": [
                {"query": True, "admin": True, "protocol": "TCP", "port": 2641},
                {"query": True, "admin": False, "protocol": "UDP", "port": 2641},
            ],
        }
    ],
}


def test_site_golden() -> None:
    assert encode_site(SITE_OBJ) == SITE_GOLDEN
    assert decode_site(SITE_GOLDEN) == SITE_OBJ


def test_site_json_both_ways() -> None:
    assert site_to_json(SITE_GOLDEN) == SITE_JSON
    assert site_from_json(SITE_JSON) == SITE_GOLDEN
    assert data_to_json("HS_SITE", SITE_GOLDEN) == {"format": "site", "value": SITE_JSON}
    assert data_to_json("HS_SITE.PREFIX", SITE_GOLDEN)["format"] == "site"


def test_site_ipv6_flags_hash_and_key() -> None:
    key = rsa.generate_private_key(65537, 1024).public_key()
    site = SiteInfo(
        serial=7,
        multi_primary=True,
        hash_option=0,
        hash_filter="x",
        servers=(ServerInfo(2, ipaddress.IPv6Address("2001:db8::1"), encode_public_key(key), (Interface(1, 3, 443),)),),
    )
    data = encode_site(site)
    assert data[6] == 0x40  # multi-primary flag, not primary
    assert decode_site(data) == site
    js = site_to_json(data)
    assert js["hashOption"] == 0 and js["hashFilter"] == "x"
    server = js["servers"][0]
    assert server["address"] == "2001:db8::1"
    assert server["publicKey"]["format"] == "key" and server["publicKey"]["value"]["kty"] == "RSA"
    assert server["interfaces"] == [{"query": False, "admin": True, "protocol": "HTTPS", "port": 443}]
    assert site_from_json(js) == data


def test_site_from_json_handle_net_sample_and_variants() -> None:
    sample = {
        "version": 1,
        "protocolVersion": "2.10",
        "serialNumber": 1,
        "primarySite": True,
        "multiPrimary": False,
        "attributes": {"desc": ["a", "b"], "alt_addr.1": "10.0.0.9"},
        "servers": [
            {
                "serverId": 1,
                "address": "::ffff:10.0.0.1",  # Java maps IPv4-mapped addresses to IPv4
                "publicKey": {"format": "hex", "value": "00"},
                "interfaces": [{"query": True, "admin": False, "protocol": 4, "port": "2641"}],
            }
        ],
    }
    site = site_info_from_json(sample)
    assert site.attributes == (("desc", "a"), ("desc", "b"), ("alt_addr.1", "10.0.0.9"))
    assert site.servers[0].address == ipaddress.IPv4Address("10.0.0.1")
    assert site.servers[0].public_key == b"\0"
    assert site.servers[0].interfaces == (Interface(IF_QUERY, 4, 2641),)
    assert site_to_json(encode_site(site))["servers"][0]["interfaces"][0]["protocol"] == 4
    # defaults and the old capitalised shape
    legacy = site_info_from_json(
        {"ServerList": [{"Address": "10.0.0.1", "PublicKey": "00ff", "Interfaces": [{"Protocol": "TCP", "Port": 1}]}]}
    )
    assert legacy.protocol_major == 2 and legacy.hash_option == 2 and legacy.version == 1
    assert legacy.servers[0].public_key == b"\0\xff"
    assert legacy.servers[0].interfaces[0].type == 0  # neither query nor admin: out of service


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([], "must be an object"),
        ({"protocolVersion": "2"}, "protocolVersion"),
        ({"protocolVersion": "2.300"}, "protocolVersion"),
        ({"serialNumber": 70000}, "serialNumber"),
        ({"primarySite": "maybe"}, "primarySite"),
        ({"servers": {}}, "'servers' must be an array"),
        ({"servers": [{"address": "handle.example.org"}]}, "not an IP address"),
        ({"servers": [{}]}, "'address'"),
        ({"servers": [{"address": "10.0.0.1", "interfaces": [{"protocol": "TCP"}]}]}, "'port' is required"),
        ({"servers": [{"address": "10.0.0.1", "interfaces": [{"protocol": "SCTP", "port": 1}]}]}, "'protocol'"),
        ({"servers": [{"address": "10.0.0.1", "interfaces": [{"protocol": "TCP", "port": 65536}]}]}, "'port'"),
        ({"servers": [{"address": "10.0.0.1", "publicKey": {"format": "base64", "value": "@@"}}]}, "base64"),
        ({"attributes": [{"name": "a"}]}, "attributes"),
        ({"attributes": 5}, "attributes"),
    ],
)
def test_site_from_json_rejects(obj: object, match: str) -> None:
    with pytest.raises(InvalidValue, match=match):
        site_from_json(obj)


@pytest.mark.parametrize("cut", [0, 5, 9, 20, 40, len(SITE_GOLDEN) - 1])
def test_decode_site_truncated(cut: int) -> None:
    with pytest.raises(InvalidValue, match="HS_SITE data"):
        decode_site(SITE_GOLDEN[:cut])


def test_decode_site_trailing_and_huge_counts() -> None:
    with pytest.raises(InvalidValue, match="unexpected bytes"):
        decode_site(SITE_GOLDEN + b"\0")
    with pytest.raises(InvalidValue, match="attribute count"):
        decode_site(SITE_GOLDEN[:12] + h("7f ff ff ff"))


# ---------------------------------------------------------------------------------------------- HS_PUBKEY

ED25519_RFC8032 = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


def test_ed25519_golden_and_jwk() -> None:
    key = ed25519.Ed25519PublicKey.from_public_bytes(ED25519_RFC8032)
    data = encode_public_key(key)
    assert data == s("Ed25519") + h("00 00 | 00 00 00 20") + ED25519_RFC8032
    jwk = public_key_to_jwk(data)
    assert jwk == {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}  # RFC 8037
    assert public_key_from_jwk(jwk) == data
    assert data_to_json("HS_PUBKEY", data) == {"format": "key", "value": jwk}


def test_rsa_golden_java_bigint_bytes() -> None:
    n = (1 << 511) | 0x1234567  # top bit set: Java's toByteArray adds a leading zero byte
    data = encode_public_key(rsa.RSAPublicNumbers(65537, n).public_key())
    assert data == (
        s("RSA_PUB_KEY") + h("00 00") + h("00 00 00 03 01 00 01") + h("00 00 00 41 00") + n.to_bytes(64, "big")
    )
    jwk = public_key_to_jwk(data)
    assert jwk["kty"] == "RSA" and jwk["e"] == "AQAB"
    assert base64.urlsafe_b64decode(jwk["n"] + "==") == n.to_bytes(64, "big")  # unsigned, no leading zero
    assert public_key_from_jwk(jwk) == data
    assert public_key_from_jwk({"kty": "rsa", "n": jwk["n"] + "=", "e": "AQAB"}) == data  # padding, case


def test_rsa_and_dsa_round_trips() -> None:
    rkey = rsa.generate_private_key(65537, 2048).public_key()
    rdata = encode_public_key(rkey)
    assert decode_public_key(rdata).public_numbers() == rkey.public_numbers()
    dkey = dsa.generate_private_key(2048).public_key()
    ddata = encode_public_key(dkey)
    assert ddata.startswith(s("DSA_PUB_KEY") + h("00 00"))
    assert decode_public_key(ddata).public_numbers() == dkey.public_numbers()
    jwk = public_key_to_jwk(ddata)
    assert set(jwk) == {"kty", "y", "p", "q", "g"}
    assert public_key_from_jwk(jwk) == ddata


@pytest.mark.parametrize(
    ("jwk", "match"),
    [
        ("AQAB", "JWK object"),
        ({}, "'kty'"),
        ({"kty": "EC", "crv": "P-256"}, "unsupported kty"),
        ({"kty": "OKP", "crv": "X25519", "x": "AAAA"}, "Ed25519"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, "invalid key"),
        ({"kty": "RSA", "n": "AQAB"}, "'e'"),
        ({"kty": "RSA", "n": "!!", "e": "AQAB"}, "'n'"),
        ({"kty": "RSA", "n": "", "e": "AQAB"}, "'n' must not be empty"),
        ({"kty": "RSA", "n": "AQAB", "e": "AQAB"}, "invalid key"),
    ],
)
def test_public_key_from_jwk_rejects(jwk: object, match: str) -> None:
    with pytest.raises(InvalidValue, match=match):
        public_key_from_jwk(jwk)


@pytest.mark.parametrize(
    "data",
    [b"", s("RSA_PUB_KEY"), s("EC_PUB_KEY") + h("00 00"), s("Ed25519") + h("00 00 00 00 00 03 01 02 03")],
)
def test_decode_public_key_rejects(data: bytes) -> None:
    with pytest.raises(InvalidValue, match="HS_PUBKEY"):
        decode_public_key(data)


def test_encode_public_key_rejects_other_objects() -> None:
    with pytest.raises(InvalidValue, match="unsupported"):
        encode_public_key("not a key")


# ---------------------------------------------------------------------------------------------- generic


@pytest.mark.parametrize(
    ("data", "binary"),
    [
        (b"", False),
        (b"https://example.org/a?b=c", False),
        ("汉字 ok\ttab\r\n".encode(), False),
        (b"\x13", False),  # HANDLE.NET lets 0x09..0x13 through
        (b"\x00", True),
        (b"abc\x1f", True),
        (b"\x7f", True),
        (b"\xff\xfe", True),
        (b"\xed\xa0\x80", True),  # an encoded surrogate
    ],
)
def test_looks_like_binary(data: bytes, binary: bool) -> None:
    assert looks_like_binary(data) is binary


def test_data_to_json_formats() -> None:
    assert data_to_json("URL", b"https://x") == {"format": "string", "value": "https://x"}
    assert data_to_json("URL", b"\x00\x01") == {"format": "base64", "value": "AAE="}
    assert data_to_json("hs_admin", ADMIN_GOLDEN)["format"] == "admin"  # type match ignores case
    assert data_to_json("HS_VLIST", VLIST_GOLDEN) == {"format": "vlist", "value": vlist_to_json(VLIST_GOLDEN)}
    # typed values whose bytes do not decode fall back instead of raising
    assert data_to_json("HS_ADMIN", b"junk") == {"format": "string", "value": "junk"}
    assert data_to_json("HS_PUBKEY", b"\x00\x01") == {"format": "base64", "value": "AAE="}
    assert data_to_json("HS_SITE", SITE_GOLDEN + b"\x00")["format"] == "base64"


def test_data_from_json_forms() -> None:
    assert data_from_json("URL", "https://x") == b"https://x"
    assert data_from_json("URL", {"value": "abc"}) == b"abc"
    assert data_from_json("URL", {"format": "string", "value": "汉"}) == "汉".encode()
    assert data_from_json("URL", {"format": "BASE64", "value": "AAE="}) == b"\x00\x01"
    assert data_from_json("URL", {"format": "base64", "value": "-_8"}) == b"\xfb\xff"  # url-safe, unpadded
    assert data_from_json("URL", {"format": "base64", "value": ""}) == b""
    assert data_from_json("URL", {"format": "hex", "value": "00 FF ab"}) == b"\x00\xff\xab"
    assert data_from_json("HS_ADMIN", {"format": "admin", "value": admin_to_json(ADMIN_GOLDEN)}) == ADMIN_GOLDEN
    assert data_from_json("HS_VLIST", {"format": "vlist", "value": vlist_to_json(VLIST_GOLDEN)}) == VLIST_GOLDEN
    assert data_from_json("HS_SITE", {"format": "site", "value": SITE_JSON}) == SITE_GOLDEN
    key = encode_public_key(ed25519.Ed25519PublicKey.from_public_bytes(ED25519_RFC8032))
    assert data_from_json("HS_PUBKEY", {"format": "key", "value": public_key_to_jwk(key)}) == key


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (None, "must be a string or an object"),
        (5, "must be a string or an object"),
        (["a"], "must be a string or an object"),
        ({"format": "yaml", "value": "x"}, "unknown format 'yaml'"),
        ({"format": 3, "value": "x"}, "unknown format"),
        ({"format": "string"}, "'value' is required"),
        ({"format": "string", "value": 5}, "JSON string"),
        ({"value": ["x"]}, "JSON string"),
        ({"format": "base64", "value": "A"}, "not valid base64"),
        ({"format": "base64", "value": "AA*A"}, "not valid base64"),
        ({"format": "base64", "value": 12}, "base64 string"),
        ({"format": "hex", "value": "abc"}, "hex digits"),
        ({"format": "hex", "value": "zz"}, "hex digits"),
        ({"format": "hex", "value": None}, "JSON string"),
        ("\ud800", "UTF-8"),
        ({"format": "admin", "value": "x"}, "HS_ADMIN"),
        ({"format": "vlist", "value": "x"}, "HS_VLIST"),
        ({"format": "site", "value": "x"}, "HS_SITE"),
        ({"format": "key", "value": "x"}, "HS_PUBKEY"),
    ],
)
def test_data_from_json_rejects(data: object, match: str) -> None:
    with pytest.raises(InvalidValue, match=match):
        data_from_json("URL", data)


# ---------------------------------------------------------------------------------------------- fuzz

TYPES = ["URL", "HS_ADMIN", "HS_VLIST", "HS_SITE", "HS_SITE.PREFIX", "HS_PUBKEY", "EMAIL", "HS_SECKEY"]
GOLDEN = [ADMIN_GOLDEN, VLIST_GOLDEN, SITE_GOLDEN, s("Ed25519") + h("00 00 00 00 00 20") + ED25519_RFC8032]


def _mutations() -> st.SearchStrategy[bytes]:
    def mutate(base: bytes, pos: int, new: bytes, cut: int) -> bytes:
        pos %= len(base) + 1
        return (base[:pos] + new + base[pos + len(new) :])[: cut or None]

    return st.builds(mutate, st.sampled_from(GOLDEN), st.integers(0, 400), st.binary(max_size=6), st.integers(0, 200))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=300), _mutations()), type_=st.sampled_from(TYPES))
def test_fuzz_binary_decoders_only_raise_invalid_value(data: bytes, type_: str) -> None:
    for decoder in (decode_admin, decode_vlist, decode_site, decode_public_key, site_to_json, admin_to_json):
        with contextlib.suppress(InvalidValue):
            decoder(data)
    out = data_to_json(type_, data)  # never raises
    assert out["format"] in ("string", "base64", "admin", "vlist", "site", "key")
    try:
        back = data_from_json(type_, out)
    except InvalidValue:
        assert out["format"] not in ("string", "base64")  # e.g. a port > 65535 in a decoded site
    else:
        if out["format"] in ("string", "base64", "vlist"):
            assert back == data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
json_keys = st.sampled_from(
    ["format", "value", "handle", "index", "permissions", "servers", "address", "interfaces", "protocol", "port",
     "publicKey", "kty", "n", "e", "x", "crv", "protocolVersion", "attributes", "serialNumber", "legacyByteLength"]
)  # fmt: skip
shaped = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.sampled_from(
        ["admin", "vlist", "site", "key", "hex", "base64", "string", "RSA", "OKP", "Ed25519", "TCP", "10.0.0.1",
         "2.10", "AQAB", "*", "0111", "200", "0.NA/1"]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(json_keys, inner, max_size=6),
    max_leaves=25,
)  # fmt: skip


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(obj=st.one_of(json_values, shaped))
def test_fuzz_json_input_only_raises_invalid_value(obj: object) -> None:
    for parse in (
        lambda o: data_from_json("URL", o),
        admin_from_json,
        vlist_from_json,
        site_from_json,
        public_key_from_jwk,
        lambda o: data_from_json("X", {"format": "site", "value": o}),
    ):
        try:
            result = parse(obj)
        except InvalidValue:
            continue
        assert isinstance(result, bytes)
