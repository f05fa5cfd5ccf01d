"""The page machinery: every template renders in both languages, the catalogue covers every message,
the locale is negotiated in its fixed order, numbers, money and dates are formatted by Babel, and the
page package imports nothing from the resolver."""

from __future__ import annotations

import ast
import datetime as dt
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from babel.messages.extract import extract
from babel.messages.pofile import read_po

from promotion_tracker import pages, report
from promotion_tracker.policy import Policy, compute_award
from promotion_tracker.routes import BUREAU_PAGES, TallyQuery
from promotion_tracker.signing import Signer
from promotion_tracker.tally import EnterpriseRow, PromoterTally, Tally
from promotion_tracker.webpages import (
    format_date,
    format_datetime,
    format_money,
    format_number,
    negotiate_locale,
)
from promotion_tracker.webpages.environment import BASE_TEMPLATES, make_environment
from promotion_tracker.webpages.locales import parse_accept_language
from registry.stores.base import Promoter

PACKAGE = Path(report.__file__).parent
CATALOGUE = PACKAGE / "locale" / "zh" / "LC_MESSAGES" / "messages.po"
TEMPLATE_DIRS = [BASE_TEMPLATES, BUREAU_PAGES.templates]


def _document(final: bool = True) -> tuple[dict, bytes]:
    policy = Policy()
    counts = {f"88.118.8.{1000 + i}": 10_000 + i for i in range(21)}
    rows = [
        EnterpriseRow(i + 1, f"应用企业{i + 1}", f"9144010000000000{i:02d}", k, n, True, False)
        for i, (k, n) in enumerate(counts.items())
    ]
    award = compute_award(counts, policy, contribution_cap_yuan=150_000)
    tally = Tally(
        dt.date(2025, 1, 1),
        dt.date(2026, 1, 1),
        dt.datetime(2025, 12, 31, 16, tzinfo=dt.UTC),
        dt.datetime(2025, 12, 31, 16, 30, tzinfo=dt.UTC),
        final,
        policy,
        [PromoterTally(Promoter(1, "广州白云数字推广有限公司", "92440111000000001X", 0), rows, award)],
        {1: 150_000},
    )
    months = ([f"2025-{m:02d}" for m in range(1, 13)], {r.id: [r.registrations] + [0] * 11 for r in rows})
    body = report.tally_json(tally, node_prefix="88.118.8", generated_at=tally.as_of, monthly=months)
    data = report.document_bytes(Signer.generate().sign(body))
    return json.loads(data), data


def _query() -> TallyQuery:
    return TallyQuery(dt.date(2025, 1, 1), dt.date(2026, 1, 1), None, "", None, {1: 150_000})


def _contexts(locale: str) -> dict[str, dict]:
    document, data = _document()
    digest = report.document_digest(data)
    request = make_mocked_request("GET", "/bureau?from=2025-13-01")
    common = {"language_links": {"zh": "/bureau?lang=zh", "en": "/bureau?lang=en"}, "locale": locale}
    error = pages.error_context(request, "from must be a date", 400, (dt.date(2025, 1, 1), dt.date(2026, 1, 1)))
    return {
        "base.html": common,
        "error.html": {**common, "status": 400, "message": "bad"},
        "bureau/tally.html": {**common, **pages.bureau_context(document, digest, _query(), locale)},
        "bureau/promoter.html": {**common, **pages.promoter_context(document, digest, _query(), 1, locale)},
        "bureau/error.html": {**common, **error},
    }


def _pages() -> list[str]:
    """Every page template (partials start with an underscore; CSS is included, not rendered)."""
    out = []
    for root in TEMPLATE_DIRS:
        for path in sorted(root.rglob("*.html")):
            if not path.name.startswith("_"):
                out.append(path.relative_to(root).as_posix())
    return out


def test_every_page_template_has_a_context_here() -> None:
    assert sorted(_pages()) == sorted(_contexts("zh"))


@pytest.mark.parametrize("locale", ["zh", "en"])
@pytest.mark.parametrize("template", _pages())
def test_every_template_renders_in_both_languages(template: str, locale: str) -> None:
    env = make_environment(BUREAU_PAGES)
    html = env.get_template(template).render(_contexts(locale)[template])
    assert html.startswith("<!doctype html>")
    assert f'<html lang="{"zh-CN" if locale == "zh" else "en"}">' in html
    if locale == "zh":
        assert "工业互联网标识解析" in html and "Industrial Internet identifier resolution" not in html
    else:
        assert "Industrial Internet identifier resolution" in html
    if template == "bureau/tally.html":
        assert ("推广单位" if locale == "zh" else "Promoter") in html
        assert ("150,000 元" if locale == "zh" else "CNY 150,000") in html
        assert ("2025年1月1日" if locale == "zh" else "January 1, 2025") in html
        assert "定稿 final" in html and "第十七条" in html  # the explanation in Chinese in both languages
    if template == "bureau/promoter.html":
        assert html.count("<rect ") == 12 and ("1月" if locale == "zh" else "Jan") in html


def _template_messages() -> set[str]:
    options = {"extensions": "jinja2.ext.i18n", "newstyle_gettext": "true", "trim_blocks": "true"}
    found: set[str] = set()
    for root in TEMPLATE_DIRS:
        for path in root.rglob("*.html"):
            with path.open("rb") as fh:
                found |= {m[1] for m in extract("jinja2.ext:babel_extract", fh, options=options)}
    for path in (PACKAGE / "webpages").glob("*.py"):
        with path.open("rb") as fh:
            found |= {m[1] for m in extract("python", fh, keywords={"gettext": None})}
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
    # Placeholders survive translation.
    for msgid, msgstr in translated.items():
        for part in ("%(amount)s", "%(n)s", "%(first)s", "%(last)s", "%(time)s", "%(id)s"):
            assert (part in msgid) == (part in msgstr), msgid


def _request(query: str = "", **headers: str):  # type: ignore[no-untyped-def]
    return make_mocked_request("GET", f"/bureau{query}", headers=headers)


def test_locale_negotiation_order() -> None:
    assert negotiate_locale(_request()) == "zh"  # the default
    assert negotiate_locale(_request(**{"Accept-Language": "en-US,en;q=0.9"})) == "en"
    assert negotiate_locale(_request(**{"Accept-Language": "fr-FR, zh-TW;q=0.5, en;q=0.4"})) == "zh"
    assert negotiate_locale(_request(**{"Accept-Language": "zh;q=0.1, en;q=0.8"})) == "en"
    assert negotiate_locale(_request(**{"Accept-Language": "en;q=0, fr"})) == "zh"
    assert negotiate_locale(_request(**{"Accept-Language": "en", "Cookie": "lang=zh"})) == "zh"
    assert negotiate_locale(_request("?lang=en", **{"Accept-Language": "zh", "Cookie": "lang=zh"})) == "en"
    assert negotiate_locale(_request("?lang=xx", **{"Accept-Language": "en"})) == "en"
    assert negotiate_locale(_request("?lang=zh_Hans")) == "zh"
    assert parse_accept_language("a;q=x, b;q=0.5, c") == ["c", "b"]
    assert parse_accept_language(",".join(["en"] * 100)) == ["en"] * 32


def test_babel_formats_money_dates_and_counts() -> None:
    assert format_number(200_000, "zh") == "200,000"
    assert format_money(200_000, "zh") == "200,000 元"
    assert format_money(1_000_000, "en") == "CNY 1,000,000"
    assert format_date(dt.date(2026, 12, 1), "zh") == "2026年12月1日"
    assert format_date(dt.date(2026, 12, 1), "en") == "December 1, 2026"
    # Instants are shown in Beijing time: 16:00Z on 30 November is midnight on 1 December.
    assert format_datetime(dt.datetime(2026, 11, 30, 16, tzinfo=dt.UTC), "zh") == "2026年12月1日 00:00"


def test_page_package_imports_nothing_from_the_resolver() -> None:
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("resolver"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("resolver") for a in node.names), path
