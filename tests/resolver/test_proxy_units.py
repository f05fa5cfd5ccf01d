"""The proxy's pure parts: content negotiation, safe URLs, 10320/loc parsing and choice, the choice of
redirect target, link relations."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from registry.model import HandleValue
from resolver.proxy.linkset import DEFAULT_LINK, linkset, relation_of
from resolver.proxy.locations import LocationSet, choose, parse_locations
from resolver.proxy.negotiation import Wanted, wanted
from resolver.proxy.targets import destinations_of
from resolver.proxy.urls import append_to, safe_url

HANDLE = "88.118.8.1001/SKU 1"


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        (None, Wanted.PEOPLE),
        ("", Wanted.PEOPLE),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", Wanted.PEOPLE),
        ("*/*", Wanted.PEOPLE),
        ("application/json", Wanted.JSON),
        ("application/json, text/plain, */*", Wanted.JSON),  # axios: named beats */* at the same quality
        ("application/*", Wanted.JSON),
        ("APPLICATION/JSON; charset=utf-8", Wanted.JSON),
        ("application/linkset+json", Wanted.LINKSET),
        ("application/linkset+json, application/json;q=0.9", Wanted.LINKSET),
        ("application/json, application/linkset+json", Wanted.JSON),  # a tie: the order of the module
        ("text/html, application/json", Wanted.PEOPLE),
        ("text/html;q=0.1, application/json;q=0.2", Wanted.JSON),
        ("application/json;q=0", Wanted.PEOPLE),
        ("application/json;q=nonsense", Wanted.PEOPLE),
        ("image/png", Wanted.PEOPLE),
        ("garbage,,;;", Wanted.PEOPLE),
    ],
)
def test_negotiation(accept: str | None, kind: Wanted) -> None:
    assert wanted(accept) is kind
    assert wanted(accept) is kind  # memoised alike


def test_safe_urls() -> None:
    assert safe_url("https://example.com/a b/产品?x=1#y") == "https://example.com/a%20b/%E4%BA%A7%E5%93%81?x=1#y"
    assert safe_url("  http://example.com  ") == "http://example.com"
    assert safe_url("https://example.com/%E4%BA%A7") == "https://example.com/%E4%BA%A7"  # already encoded: kept
    for bad in (
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "\tjavascript:alert(1)",
        "data:text/html,x",
        "file:///etc/passwd",
        "ftp://example.com/",
        "https://",
        "https:///path",
        "//example.com/x",
        "https://example.com/\r\nSet-Cookie: a=b",
        "https://[::1/",
        "https://example.com:99999/",
        "https://example.com/" + "x" * 5000,
        "",
        None,
    ):
        assert safe_url(bad) is None, bad
    assert append_to("https://a.example.com/p", "?x=1") == "https://a.example.com/p?x=1"
    assert append_to("https://a.example.com", "@evil.example") is None
    assert append_to("https://a.example.com", ".evil.example/") is None
    assert append_to("https://a.example.com/p", "\n") is None


LOCS = """<locations chooseby="locatt,address,score,weighted">
<location href="https://a.example.com/" weight="1" view="desktop" score="1"/>
<location href="https://b.example.com/" weight="2" view="mobile" addresses="10.0.0.0/8, 2001:db8::/32"/>
<loc_template href_template="https://c.example.com/{hdl:path}?h={hdl}" weight="0" score="5" view="mirror"/>
<location href="vbscript:x" weight="9"/>
<location weight="9"/>
<other href="https://d.example.com/"/>
<location href="https://e.example.com/" weight="-3" view="old"><location href="https://nested.example.com/"/></location>
</locations>"""


def test_parse_locations() -> None:
    found = parse_locations(LOCS.encode(), HANDLE)
    assert found is not None
    assert found.choose_by == ("locatt", "address", "score", "weighted")
    assert [loc.href for loc in found.locations] == [
        "https://a.example.com/",
        "https://b.example.com/",
        "https://c.example.com/88.118.8.1001/SKU%201?h=88.118.8.1001%2FSKU%201",
        "https://e.example.com/",
    ]
    assert [loc.weight for loc in found.locations] == [1.0, 2.0, 0.0, 0.0]
    assert found.locations[0].attribute("view") == "desktop" and found.locations[0].attribute("nothing") is None
    # Not a locations document: None; a DTD (entities) is refused; many locations are cut at 100.
    for bad in (b"not xml", b"<locations>", b"\xff\xfe", b'<!DOCTYPE x [<!ENTITY a "b">]><locations/>'):
        assert parse_locations(bad, HANDLE) is None, bad
    many = "<locations>" + '<location href="https://x.example.com/"/>' * 500 + "</locations>"
    parsed = parse_locations(many.encode(), HANDLE)
    assert parsed is not None and len(parsed.locations) == 100


def test_choose_a_location() -> None:
    found = parse_locations(LOCS.encode(), HANDLE)
    assert found is not None
    rng = random.Random(7)
    pick = lambda **kw: choose(found, rng=rng, **kw).href  # noqa: E731
    assert pick(locatt=["view:mobile"]) == "https://b.example.com/"
    assert pick(locatt=["view"]) == "https://c.example.com/88.118.8.1001/SKU%201?h=88.118.8.1001%2FSKU%201"  # score
    assert pick(locatt=["view:nothing"], client="10.1.2.3") == "https://b.example.com/"  # address
    assert pick(client="2001:db8:1:2::/64") == "https://b.example.com/"  # an IPv6 client counted by its /64
    assert pick(client="192.0.2.1") == "https://c.example.com/88.118.8.1001/SKU%201?h=88.118.8.1001%2FSKU%201"
    # Weighted: 1 to 2, never weight 0 while another has weight.
    plain = LocationSet(found.locations[:2] + found.locations[3:], ("weighted",))
    counts = Counter(choose(plain, rng=rng).href for _ in range(3000))  # type: ignore[union-attr]
    assert set(counts) == {"https://a.example.com/", "https://b.example.com/"}
    assert 1.6 < counts["https://b.example.com/"] / counts["https://a.example.com/"] < 2.4
    zero = LocationSet(found.locations[2:], ("weighted",))
    assert {choose(zero, rng=rng).href for _ in range(50)} == {loc.href for loc in zero.locations}  # type: ignore[union-attr]
    assert choose(LocationSet(()), rng=rng) is None


def _value(index: int, type_: str, data: str, permissions: int = 0b1110) -> HandleValue:
    return HandleValue(index, type_, data.encode(), permissions=permissions)


def test_redirect_target_choice() -> None:
    values = [
        _value(7, "URL", "https://seven.example.com/"),
        _value(3, "URL.mobile", "https://three.example.com/"),
        _value(5, "URL", "https://five.example.com/"),
        _value(9, "EMAIL", "a@example.com"),
        _value(11, "DESC", "https://desc.example.com/"),
        _value(12, "HS_ALIAS", " 88.118.8.1001/OTHER "),
    ]
    found = destinations_of(values, HANDLE)
    assert found.target() == "https://five.example.com/"  # type URL before its subtypes, lowest index
    assert found.target(index=3) == "https://three.example.com/"
    assert found.target(index=11) == "https://desc.example.com/"  # any value whose data is a URL
    assert found.target(index=9) is None and found.target(index=404) is None
    assert found.target(type_="url.MOBILE") == "https://three.example.com/"
    assert found.target(type_="EMAIL") is None
    assert found.alias == "88.118.8.1001/OTHER"
    only_subtypes = destinations_of([values[1]], HANDLE)
    assert only_subtypes.target() == "https://three.example.com/"
    with_locations = destinations_of([*values, _value(2, "10320/LOC", LOCS)], HANDLE)
    assert with_locations.target(locatt=["view:desktop"]) == "https://a.example.com/"
    assert with_locations.target(index=5) == "https://five.example.com/"


def test_link_relations() -> None:
    assert relation_of("gs1:pip") == "https://gs1.org/voc/pip"
    assert relation_of("License") == "license"
    assert relation_of("https://example.com/rel/spec") == "https://example.com/rel/spec"
    for no in ("batch", "gs1:", "gs1:pip page", "javascript:x", "", None):
        assert relation_of(no) is None
    found = destinations_of(
        [_value(1, "URL", "https://p.example.com/"), _value(2, "URL.manual", "https://m.example.com/")], HANDLE
    )
    document = linkset("https://node.example.com/" + HANDLE, found, {})
    (context,) = document["linkset"]
    assert context[DEFAULT_LINK] == [{"href": "https://p.example.com/"}]
    assert context["describedby"] == [
        {"href": "https://p.example.com/"},
        {"href": "https://m.example.com/", "title": "URL.manual"},
    ]
    assert linkset("https://node.example.com/x", destinations_of([], HANDLE), {}) == {"linkset": []}
