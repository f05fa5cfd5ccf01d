"""The console's pure parts and its catalogue: the identity field, the template-generated form's
checks, the chart, the key range of a suffix search; every message of the console's templates and
modules translated (and the same as the bureau's where both use one); what the console leaves alone."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from babel.messages.extract import extract
from babel.messages.pofile import read_po

import resolver.console
from registry.callers import key_range_end
from registry.errors import RC_INVALID_VALUE, RC_NOT_AUTHORIZED, RC_PROTOCOL_ERROR, InvalidCredential
from registry.templates import Template, TemplateField
from resolver.console.charts import day_chart
from resolver.console.forms import identity_from_text, read_identifier_form
from resolver.console.reasons import reason_text
from resolver.console.scripts import SCRIPT_URL
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, basic
from tests.resolver.console.conftest import Node

PACKAGE = Path(resolver.console.__file__).parent
BUREAU_CATALOGUE = PACKAGE.parents[1] / "promotion_tracker" / "locale" / "zh" / "LC_MESSAGES" / "messages.po"


@pytest.mark.parametrize(
    ("typed", "identity"),
    [
        ("88.118.8.1001", "300:0.NA/88.118.8.1001"),
        (" 88.118.8.1001 ", "300:0.NA/88.118.8.1001"),
        ("300:88.118.8.1001", "300:0.NA/88.118.8.1001"),
        ("300:0.NA/88.118.8.1001", "300:0.NA/88.118.8.1001"),
        ("0.NA/88.118.8", "300:0.NA/88.118.8"),
        ("301:88.118.8.1001", "301:0.NA/88.118.8.1001"),
        ("300:88.118.8/auditor/baiyun", "300:88.118.8/auditor/baiyun"),
    ],
)
def test_the_identity_field_takes_a_prefix_or_index_and_handle(typed: str, identity: str) -> None:
    assert str(identity_from_text(typed)) == identity


@pytest.mark.parametrize("typed", ["", "   ", "x" * 301, "300:", "0:88.118.8", "88.118.8\x00", "300:/x"])
def test_the_identity_field_refuses_what_names_no_identity(typed: str) -> None:
    with pytest.raises(InvalidCredential):
        identity_from_text(typed)


TEMPLATE = Template(
    "furniture",
    2,
    "88.118.8.1001",
    (
        TemplateField(2001, "model", "MODEL", required=True, pattern="^[A-Z]{2}-[0-9]{3}$"),
        TemplateField(2002, "material", "MATERIAL", enum=("oak", "pine")),
        TemplateField(2003, "batch", "BATCH_NO", min_length=2, max_length=4),
        TemplateField(2004, "old", "OLD", required=True, disabled=True),
    ),
)


def test_the_template_form_checks_each_field_and_writes_the_values() -> None:
    form = read_identifier_form(
        {
            "suffix": "",
            "url": "javascript:alert(1)",
            "field_2001": "ab-1",
            "field_2002": "steel",
            "field_2003": "12345",
        },
        TEMPLATE,
    )
    assert form.errors == {
        "suffix": "This field is required.",
        "url": "A web address starting with https:// or http://.",
        "field_2001": "Does not match the required pattern.",
        "field_2002": "Choose one of the listed values.",
        "field_2003": "Too long.",
    }  # the disabled field is neither asked for nor required
    assert read_identifier_form({"suffix": "a", "field_2001": "AB-123", "field_2003": "1"}, TEMPLATE).errors == {
        "field_2003": "Too short."
    }
    assert read_identifier_form({"suffix": "a"}, TEMPLATE).errors == {"field_2001": "This field is required."}
    assert read_identifier_form({"suffix": "a"}, None).errors == {"url": "Give a URL, or choose a template."}
    assert read_identifier_form({"suffix": "a\tb", "url": "https://x"}, None).errors == {
        "suffix": "No control characters."
    }
    assert read_identifier_form({"suffix": "a", "url": "h" * 2001}, None).errors  # too long to be read at all
    good = read_identifier_form(
        {"suffix": " SKU-1 ", "url": "https://e.example/1", "field_2001": "AB-123", "field_2002": "oak"}, TEMPLATE
    )
    assert good.errors == {} and good.suffix == "SKU-1"
    values = {(v.index, v.type): v.data.decode() for v in good.values(TEMPLATE)}
    assert values == {
        (1, "URL"): "https://e.example/1",
        (1001, "TEMPLATE"): "furniture@2",
        (2001, "MODEL"): "AB-123",
        (2002, "MATERIAL"): "oak",
    }


def test_the_day_chart() -> None:
    last = dt.date(2026, 3, 1)
    chart = day_chart({20260301: 8, 20260227: 4, 20260220: -2, 20260101: 99}, last, days=10)
    assert [b.day for b in chart.bars] == [last - dt.timedelta(days=9 - i) for i in range(10)]
    assert [b.value for b in chart.bars] == [0, 0, 0, 0, 0, 0, 0, 4, 0, 8]  # outside the span, negatives: none
    assert chart.total == 12 and chart.peak == 8
    tallest, half = chart.bars[-1], chart.bars[-3]
    assert tallest.height == pytest.approx(2 * half.height) and tallest.y + tallest.height == chart.baseline
    assert [b.label for b in chart.bars].count(True) == 2 and chart.bars[-1].label
    assert day_chart({}, last).peak == 0 and all(b.height == 0 for b in day_chart({}, last).bars)


def test_the_key_range_of_a_suffix_start() -> None:
    assert key_range_end("88.118.8.1001/SKU") == "88.118.8.1001/SKV"
    assert key_range_end("P/批") == "P/扺"
    assert key_range_end("P/\ud7ff") == "P/\ue000"  # past the surrogates UTF-8 cannot carry
    assert key_range_end("P/\U0010ffff") is None


# -- the catalogue --------------------------------------------------------------------------------
def _used_messages() -> set[str]:
    options = {"extensions": "jinja2.ext.i18n", "newstyle_gettext": "true", "trim_blocks": "true"}
    found: set[str] = set()
    for path in (PACKAGE / "templates").rglob("*.html"):
        with path.open("rb") as fh:
            found |= {
                m[1] if isinstance(m[1], str) else m[1][0]
                for m in extract("jinja2.ext:babel_extract", fh, options=options)
            }
    for path in PACKAGE.glob("*.py"):
        with path.open("rb") as fh:
            found |= {m[1] for m in extract("python", fh, keywords={"N_": None})}
    return found


def _catalogue(path: Path) -> dict[str, object]:
    with path.open("rb") as fh:
        return {(m.id if isinstance(m.id, str) else m.id[0]): m.string for m in read_po(fh) if m.id}


def test_the_chinese_catalogue_covers_every_message_and_nothing_else() -> None:
    zh = _catalogue(PACKAGE / "locale" / "zh" / "LC_MESSAGES" / "messages.po")
    used = _used_messages()
    assert len(used) > 150
    assert sorted(used - set(zh)) == [] and sorted(set(zh) - used) == []
    for msgid, msgstr in zh.items():
        text = msgstr if isinstance(msgstr, str) else "".join(msgstr)
        assert text, msgid
        for part in ("%(n)s", "%(num)s", "%(prefix)s", "%(id)s", "%(time)s", "%(q)s", "%(url)s", "%(pattern)s"):
            assert (part in msgid) == (part in text), msgid
    # Catalogues are merged: a message the bureau's pages use too must read the same in both.
    bureau = _catalogue(BUREAU_CATALOGUE)
    assert {k: zh[k] for k in set(zh) & set(bureau)} == {k: bureau[k] for k in set(zh) & set(bureau)}
    assert _catalogue(PACKAGE / "locale" / "en" / "LC_MESSAGES" / "messages.po") == {}  # ids are the English


# -- what the console leaves alone, and what it stores ----------------------------------------------
async def test_other_routes_get_no_session_or_console_headers(node: Node) -> None:
    r = await node.client.get(f"/api/handles/0.NA/{node.a['prefix']}")
    assert r.status == 200 and "Set-Cookie" not in r.headers and "Content-Security-Policy" not in r.headers
    r = await node.client.get("/console/nothing-here")
    assert r.status == 404 and r.content_type == "text/html" and r.headers["Cache-Control"] == "no-store"
    # Scripts and requests from this site only: the one script file, no inline script, no eval.
    assert r.headers["Content-Security-Policy"] == (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    r = await node.client.put("/console/key")
    assert r.status == 405 and r.content_type == "text/html"


async def test_the_store_keeps_a_hash_of_the_session_id_and_never_the_key(node: Node, tmp_path: Path) -> None:
    r = await node.client.get("/console/signin")
    token = r.cookies["idnode_console_signin"].value
    body = {"csrf": token, "identity": node.a["prefix"], "secret": node.a["secret"]}
    r = await node.client.post("/console/signin", data=body, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/console"
    session_id = r.cookies["idnode_console"].value
    with sqlite3.connect(tmp_path / "idnode.db") as db:
        rows = db.execute("SELECT id_hash, identity, data FROM console_sessions").fetchall()
    ((id_hash, identity, data),) = rows
    assert id_hash == hashlib.sha256(session_id.encode()).hexdigest() and session_id not in data
    assert identity == node.a["admin"] and node.a["secret"] not in data and '"csrf"' in data


async def test_a_post_that_is_no_console_form_is_refused_before_anything(node: Node) -> None:
    for headers, body in (
        ({"Content-Type": "multipart/form-data"}, b"csrf=&identity=&secret="),  # no boundary
        ({"Content-Type": "application/json"}, b'{"identity": "88.118.8"}'),
    ):
        r = await node.client.post("/console/signin", data=body, headers=headers)
        assert r.status == 415 and r.content_type == "text/html", await r.text()
    r = await node.client.post(
        "/console/signin", data=b"identity=%FF%FE", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status in (400, 403) and r.content_type == "text/html"  # not UTF-8, or simply no token: refused


async def _signed_in_session(node: Node, identity: str, secret: str) -> tuple[aiohttp.ClientSession, str]:
    """A client of its own (its own cookies) signed in to the console, and its form token."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.get(node.url("/console/signin")) as r:
        token = re.search(r'name="csrf" value="([^"]+)"', await r.text())
    assert token is not None
    form = {"csrf": token.group(1), "identity": identity, "secret": secret}
    async with http.post(node.url("/console/signin"), data=form, allow_redirects=False) as r:
        assert r.status == 303
    async with http.get(node.url("/console")) as r:  # the home page of either role
        csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
    assert csrf is not None
    return http, csrf.group(1)


async def test_the_operators_key_reset_ends_the_enterprises_sessions_and_moves_never_go_back(node: Node) -> None:
    a_http, _ = await _signed_in_session(node, node.a["prefix"], node.a["secret"])
    op_http, csrf = await _signed_in_session(node, NODE_ADMIN, ADMIN_SECRET)
    try:
        async with a_http.get(node.url("/console/dashboard"), allow_redirects=False) as r:
            assert r.status == 200
        enterprise = f"/console/enterprises/{node.a['id']}"
        async with op_http.post(node.url(enterprise + "/secret"), data={"csrf": csrf}) as r:
            assert r.status == 200 and 'id="secret"' in await r.text()
        async with a_http.get(node.url("/console/dashboard"), allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (303, "/console/signin")  # its key is not the one it had
        yesterday = dt.datetime.fromtimestamp(node.clock.now - 86400, dt.timezone(dt.timedelta(hours=8))).date()
        form = {"csrf": csrf, "promoter": "1", "from": yesterday.isoformat()}
        async with op_http.post(node.url(enterprise + "/move"), data=form) as r:
            assert r.status == 400 and "never in the past" in await r.text()
        r = await node.client.get(f"/api/enterprises/{node.a['id']}", headers=basic(NODE_ADMIN, ADMIN_SECRET))
        assert len((await r.json())["attributions"]) == 1  # nothing moved
    finally:
        await a_http.close()
        await op_http.close()


async def test_an_identifier_page_shows_what_the_api_serves_its_reader(node: Node) -> None:
    """registry.read_policy decides for the console as for GET /api/handles: the enterprise reads its
    non-public value that grants ADMIN_READ (1100), never one that does not (0100)."""
    a = basic(node.a["admin"], node.a["secret"])
    handle = f"{node.a['prefix']}/policy-1"

    def text(index: int, value: str, permissions: str) -> dict[str, object]:
        data = {"format": "string", "value": value}
        return {"index": index, "type": "NOTE", "data": data, "permissions": permissions}

    values = [text(1, "shown-to-all", "1110"), text(3, "shown-to-admins", "1100"), text(4, "shown-to-nobody", "0100")]
    r = await node.client.put(f"/api/handles/{handle}", json={"values": values}, headers=a)
    assert r.status == 201, await r.text()
    api = {v["index"] for v in (await (await node.client.get(f"/api/handles/{handle}", headers=a)).json())["values"]}
    assert {1, 3} <= api and 4 not in api
    http, _ = await _signed_in_session(node, node.a["prefix"], node.a["secret"])
    try:
        async with http.get(node.url("/console/identifier"), params={"suffix": "policy-1"}) as r:
            assert r.status == 200
            page = await r.text()
    finally:
        await http.close()
    assert "shown-to-all" in page and "shown-to-admins" in page and "shown-to-nobody" not in page


async def test_the_one_script_is_served_from_the_console_and_kept_by_its_version(node: Node) -> None:
    r = await node.client.get(SCRIPT_URL)
    body = await r.text()
    assert r.status == 200 and r.content_type == "text/javascript" and "XMLHttpRequest" in body
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    r = await node.client.get("/console/static/progress.js")  # without the version: asked again each time
    assert r.status == 200 and r.headers["Cache-Control"] == "no-cache"
    r = await node.client.get("/console/signin")  # pages keep no-store, and carry no inline script
    assert r.headers["Cache-Control"] == "no-store" and "<script>" not in await r.text()


def test_rejection_reasons_are_named_in_the_pages_language_with_the_registrys_detail() -> None:
    detail = "line 3: field 'model' does not match '^[A-Z]{2}-[0-9]{3}$'"
    assert reason_text("zh", RC_INVALID_VALUE, detail) == "模板字段不符：" + detail
    assert reason_text("en", RC_INVALID_VALUE, detail) == detail
    assert reason_text("zh", RC_INVALID_VALUE, "value too long") == "值无效：value too long"
    assert reason_text("zh", RC_NOT_AUTHORIZED, "outside 88.1") == "不在本企业前缀下：outside 88.1"
    assert reason_text("zh", RC_PROTOCOL_ERROR, "line 9: bad") == "该行无法读取：line 9: bad"
    assert reason_text("zh", 999, "odd") == "未注册：odd"  # a code without a kind of its own


def test_no_template_has_an_inline_script_or_handler() -> None:
    """The policy allows scripts from the node only; an inline one would be blocked (and is not written)."""
    for path in (PACKAGE / "templates").rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        for tag in re.finditer(r"<script\b([^>]*)>(.*?)</script>", text, re.S):
            assert 'src="{{ script_url }}"' in tag.group(1) and tag.group(2) == "", path
        assert text.count("<script") == len(re.findall(r"<script\b[^>]*>\s*</script>", text)), path
        assert not re.search(r"\son[a-z]+=", text), path  # no onclick= and the like
