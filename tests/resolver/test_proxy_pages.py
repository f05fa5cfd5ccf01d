"""The templates of the pages for people: every one renders in both languages from the context dicts of
``resolver.proxy.pages``, the Chinese catalogue covers every message and nothing else, and a context
never carries a link that is not http(s)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from babel.messages.extract import extract
from babel.messages.pofile import read_po

from promotion_tracker.webpages.environment import make_environment
from registry.errors import RC_HANDLE_NOT_FOUND, RC_INVALID_HANDLE, RC_RECURSION_COUNT_TOO_HIGH, RC_SERVER_NOT_RESP
from registry.model import HandleValue
from registry.stores.base import Enterprise
from registry.templates import Template, TemplateField
from resolver.proxy import PROXY_PAGES
from resolver.proxy.pages import Registration, error_context, home_context, landing_context
from resolver.proxy.targets import destinations_of

CATALOGUE = PROXY_PAGES.catalogues / "zh" / "LC_MESSAGES" / "messages.po"  # type: ignore[operator]
HANDLE = "88.118.8.1001/SKU-2025-000001"
WHEN = int(dt.datetime(2025, 11, 18, 1, 30, tzinfo=dt.UTC).timestamp())


def _landing(**extra: object) -> dict:
    values = [
        HandleValue(1, "URL", b"https://www.example.cn/p/1", timestamp=WHEN),
        HandleValue(2, "URL.manual", b"https://www.example.cn/m.pdf", timestamp=WHEN),
        HandleValue(3, "URL", b"javascript:alert(1)", timestamp=WHEN),
        HandleValue(4, "EMAIL", b"service@example.cn", timestamp=WHEN),
        HandleValue(5, "DESC", bytes(range(256)), timestamp=WHEN),
        HandleValue(6, "10320/loc", b'<locations><location href="https://m.example.cn/" title="Mobile"/></locations>'),
        HandleValue(100, "HS_ADMIN", b"\x00" * 20, timestamp=WHEN),
        HandleValue(1001, "TEMPLATE", b"power-tool@1", timestamp=WHEN),
        HandleValue(2001, "PRODUCT_NAME", "智能电动螺丝刀".encode(), timestamp=WHEN),
        HandleValue(2003, "BATCH_NO", b"B2025-11-A", timestamp=WHEN + 60),
        HandleValue(2010, "URL", b"https://trace.example.cn/t/1", timestamp=WHEN),
    ]
    fields = (
        TemplateField(2001, "产品名称", "PRODUCT_NAME"),
        TemplateField(2003, "batch", "BATCH_NO"),
        TemplateField(2010, "gs1:traceability", "URL"),
        TemplateField(2011, "gs1:pip", "URL"),
    )
    enterprise = Enterprise(1, "广州白云智能装备有限公司", "91440111000000007P", "88.118.8.1001", "active", 1, WHEN)
    return landing_context(
        handle=HANDLE,
        found=destinations_of(values, HANDLE),
        template=Template("power-tool", 1, "", fields, "电动工具"),
        registration=Registration(WHEN, enterprise),
        node_prefix="88.118.8",
        **extra,  # type: ignore[arg-type]
    )


def _contexts() -> dict[str, dict]:
    return {
        "proxy/landing.html": _landing(),
        "proxy/home.html": home_context("88.118.8", entered="86.1/x", code=RC_SERVER_NOT_RESP, message="not here"),
        "proxy/error.html": error_context(
            "88.118.8", status=404, code=RC_HANDLE_NOT_FOUND, message="Handle Not Found", handle=HANDLE
        ),
    }


def _pages() -> list[str]:
    root = PROXY_PAGES.templates
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html") if not p.name.startswith("_"))


def test_every_page_template_has_a_context_here() -> None:
    assert _pages() == sorted(_contexts())


@pytest.mark.parametrize("locale", ["zh", "en"])
@pytest.mark.parametrize("template", _pages())
def test_every_template_renders_in_both_languages(template: str, locale: str) -> None:
    env = make_environment(PROXY_PAGES)
    links = {"zh": "?lang=zh", "en": "?lang=en"}
    html = env.get_template(template).render({"locale": locale, "language_links": links, **_contexts()[template]})
    assert html.startswith("<!doctype html>") and f'<html lang="{"zh-CN" if locale == "zh" else "en"}">' in html
    node = "工业互联网标识解析二级节点 88.118.8" if locale == "zh" else "secondary node 88.118.8"
    if template == "proxy/landing.html":
        assert node in html and "广州白云智能装备有限公司" in html and '<h1 id="title">智能电动螺丝刀</h1>' in html
        assert ("2025年11月18日 09:30" if locale == "zh" else "November 18, 2025 09:30") in html
        assert ("追溯信息" if locale == "zh" else "Traceability") in html
        assert "javascript:" not in html and "HS_ADMIN" not in html
        assert ("二进制数据" if locale == "zh" else "binary data") in html
    if template == "proxy/home.html":
        assert ("该标识不属于本节点" if locale == "zh" else "This identifier belongs to another node") in html
    if template == "proxy/error.html":
        assert ("本节点未注册该标识" if locale == "zh" else "This identifier is not registered on this node") in html


def test_landing_context_arranges_the_values() -> None:
    context = _landing(alias_of="88.118.8.1001/OLD")
    assert context["primary"] == {"href": "https://www.example.cn/p/1", "host": "www.example.cn"}
    assert [(link["field"], link["label"], link["href"]) for link in context["links"]] == [
        (None, "manual", "https://www.example.cn/m.pdf"),
        (None, "Mobile", "https://m.example.cn/"),
        ("gs1:traceability", None, "https://trace.example.cn/t/1"),
    ]
    fields = [(f["name"], f["text"]) for f in context["fields"]]
    assert fields == [("产品名称", "智能电动螺丝刀"), ("batch", "B2025-11-A")]
    assert [(o["type"], o["text"]) for o in context["others"]] == [("EMAIL", "service@example.cn"), ("DESC", None)]
    assert context["registered"] == dt.datetime.fromtimestamp(WHEN, dt.UTC)
    assert context["changed"] == dt.datetime.fromtimestamp(WHEN + 60, dt.UTC)
    assert context["json_link"] == "/api/handles/88.118.8.1001/SKU-2025-000001"
    assert context["language_links"]["en"] == "/88.118.8.1001/SKU-2025-000001?noredirect&lang=en"
    for code, kind in (
        (RC_HANDLE_NOT_FOUND, "not-found"),
        (RC_INVALID_HANDLE, "invalid"),
        (RC_SERVER_NOT_RESP, "elsewhere"),
        (RC_RECURSION_COUNT_TOO_HIGH, "alias-loop"),
        (2, "other"),
    ):
        assert error_context("88.118.8", status=400, code=code, message="m", handle=None)["kind"] == kind


def _template_messages() -> set[str]:
    options = {"extensions": "jinja2.ext.i18n", "newstyle_gettext": "true", "trim_blocks": "true"}
    found: set[str] = set()
    for path in Path(PROXY_PAGES.templates).rglob("*.html"):
        with path.open("rb") as fh:
            found |= {m[1] for m in extract("jinja2.ext:babel_extract", fh, options=options)}
    return found


def test_the_chinese_catalogue_covers_every_message_and_nothing_else() -> None:
    with CATALOGUE.open("rb") as fh:
        catalog = read_po(fh)
    translated = {m.id: m.string for m in catalog if m.id}
    used = _template_messages()
    assert used, "no messages extracted"
    assert sorted(used - set(translated)) == []
    assert sorted(set(translated) - used) == []
    assert all(translated[m] for m in used)
    assert not [m.id for m in catalog if m.id and m.fuzzy]
    for msgid, msgstr in translated.items():
        for part in ("%(prefix)s", "%(example)s", "%(scanned)s", "%(target)s"):
            assert (part in msgid) == (part in msgstr), msgid
