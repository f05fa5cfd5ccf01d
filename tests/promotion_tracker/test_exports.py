"""The CSV and XLSX exports, opened with the csv module and openpyxl and compared number for number
with the signed JSON they name by digest; the per-promoter tally in all three formats."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json

from openpyxl import load_workbook

from promotion_tracker.exports import ENTERPRISE_COLUMNS, PROMOTER_COLUMNS
from promotion_tracker.report import signature_fingerprint
from promotion_tracker.signing import verify_document
from tests.promotion_tracker.bureau_data import CAPS, PERIOD, SNAPSHOT, bureau  # noqa: F401 (fixture)

QUERY = {**PERIOD, "as_of": SNAPSHOT, "cap": CAPS}
EN = [en for en, _ in PROMOTER_COLUMNS]
ZH = [zh for _, zh in PROMOTER_COLUMNS]
INTS = ["enterprises", "eligible_enterprises", "registrations", "increment_enterprises", "base_yuan"]
INTS += ["increment_yuan", "uncapped_yuan", "award_yuan"]


async def _get(bureau, path: str, **params: str) -> tuple[bytes, dict]:  # noqa: F811
    r = await bureau.client.get(path, params={**QUERY, **params}, headers=bureau.admin)
    assert r.status == 200, await r.text()
    return await r.read(), dict(r.headers)


def _expected(p: dict) -> dict[str, int]:
    a = p["award"]
    return {
        "enterprises": p["enterprises"],
        "eligible_enterprises": p["eligible_enterprises"],
        "registrations": p["registrations"],
        "increment_enterprises": a["increment_enterprises"],
        "base_yuan": a["base_yuan"],
        "increment_yuan": a["increment_yuan"],
        "uncapped_yuan": a["uncapped_yuan"],
        "award_yuan": p["award_yuan"],
    }


async def test_promoter_exports_match_the_signed_json(bureau):  # noqa: F811
    data, headers = await _get(bureau, "/api/promotion/tallies")
    document = json.loads(data)
    verify_document(document)
    digest = hashlib.sha256(data).hexdigest()
    assert headers["X-Report-SHA256"] == digest
    report = document["report"]
    promoters = report["promoters"]
    assert [p["award_yuan"] for p in promoters] == [210_000, 0, 150_000]

    # CSV, Chinese headers (the default): a BOM, then the table.
    raw, headers = await _get(bureau, "/api/promotion/tallies", format="csv")
    assert headers["Content-Type"] == "text/csv; charset=utf-8" and "attachment" in headers["Content-Disposition"]
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0] == ZH and len(rows) == 1 + len(promoters)
    for row, p in zip(rows[1:], promoters, strict=True):
        got = dict(zip(EN, row, strict=True))
        assert {k: int(got[k]) for k in INTS} == _expected(p)
        assert got["promoter_name"] == p["promoter"]["name"] and got["promoter_uscc"] == p["promoter"]["uscc"]
        assert got["qualified"] == ("是" if p["award"]["qualified"] else "否")
        assert got["explanation"] == p["explanation"]["zh"]
        assert got["as_of"] == "2025-07-01T00:00:00+08:00" and got["report_sha256"] == digest
    assert dict(zip(EN, rows[3], strict=True))["capped_by"] == "第十七条限额"

    # CSV, English headers.
    raw, _ = await _get(bureau, "/api/promotion/tallies", format="csv", lang="en")
    table = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert list(table[0]) == EN
    for row, p in zip(table, promoters, strict=True):
        assert {k: int(row[k]) for k in INTS} == _expected(p)
        assert row["explanation"] == p["explanation"]["en"] and row["report_sha256"] == digest
    assert table[2]["capped_by"] == "contribution_cap" and table[2]["contribution_cap_yuan"] == "150000"

    # XLSX: report, promoters and enterprises sheets.
    raw, headers = await _get(bureau, "/api/promotion/tallies", format="xlsx")
    assert headers["Content-Type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    wb = load_workbook(io.BytesIO(raw))
    assert wb.sheetnames == ["报告", "推广单位", "应用企业"]
    info = {row[0]: row[1] for row in wb["报告"].iter_rows(min_row=2, values_only=True)}
    assert info["签名报告摘要（SHA-256）"] == digest
    assert info["签名密钥编号"] == document["signature"]["key_id"]
    assert info["签名指纹"] == signature_fingerprint(document)
    assert info["奖励合计（元）"] == report["total_award_yuan"] == 360_000
    assert info["状态"] == "定稿" and info["规则"] == report["rule"]["zh"]
    assert wb.properties.identifier == f"sha256:{digest}"
    sheet = list(wb["推广单位"].iter_rows(values_only=True))
    assert list(sheet[0]) == ZH
    for row, p in zip(sheet[1:], promoters, strict=True):
        got = dict(zip(EN, row, strict=True))
        assert {k: got[k] for k in INTS} == _expected(p)  # numbers, not text
        assert got["report_sha256"] == digest
    ents = list(wb["应用企业"].iter_rows(values_only=True))
    assert list(ents[0]) == [zh for _, zh in ENTERPRISE_COLUMNS]
    expected_rows = [(p["promoter"]["id"], e) for p in promoters for e in p["enterprise_rows"]]
    assert len(ents) - 1 == len(expected_rows) == 16
    for row, (pid, e) in zip(ents[1:], expected_rows, strict=True):
        assert (row[0], row[2], row[3], row[4], row[5], row[6]) == (
            pid,
            e["id"],
            e["name"],
            e["uscc"],
            e["prefix"],
            e["registrations"],
        )
        assert (row[7], row[8]) == ("是" if e["eligible"] else "否", "是" if e["increment"] else "否")
    assert sum(r[6] for r in ents[1:]) == sum(p["registrations"] for p in promoters) == 7600

    # English workbook.
    raw, _ = await _get(bureau, "/api/promotion/tallies", format="xlsx", lang="en")
    assert load_workbook(io.BytesIO(raw)).sheetnames == ["Report", "Promoters", "Enterprises"]


async def test_per_promoter_tally_in_json_csv_and_xlsx(bureau):  # noqa: F811
    pid = bureau.promoters[0]
    data, _ = await _get(bureau, f"/api/promotion/tallies/{pid}")
    document = json.loads(data)
    verify_document(document)
    digest = hashlib.sha256(data).hexdigest()
    report = document["report"]
    (p,) = report["promoters"]
    months = report["months"]
    assert months == [f"2025-{m:02d}" for m in range(1, 13)]
    for e in p["enterprise_rows"]:
        assert sum(e["registrations_by_month"]) == e["registrations"]
    assert [sum(col) for col in zip(*(e["registrations_by_month"] for e in p["enterprise_rows"]), strict=True)] == p[
        "registrations_by_month"
    ]
    # The promoter's numbers are the same as in the report of every promoter.
    everyone = json.loads((await _get(bureau, "/api/promotion/tallies"))[0])["report"]["promoters"]
    assert _expected(p) == _expected(everyone[0])

    raw, headers = await _get(bureau, f"/api/promotion/tallies/{pid}", format="csv", lang="en")
    assert raw.startswith(b"\xef\xbb\xbf") and f"promoter-{pid}" in headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert list(table[0]) == [en for en, _ in ENTERPRISE_COLUMNS] + months + ["report_sha256"]
    for row, e in zip(table, p["enterprise_rows"], strict=True):
        assert int(row["enterprise_id"]) == e["id"] and int(row["registrations"]) == e["registrations"]
        assert [int(row[m]) for m in months] == e["registrations_by_month"]
        assert row["eligible"] == ("yes" if e["eligible"] else "no") and row["report_sha256"] == digest
    raw, _ = await _get(bureau, f"/api/promotion/tallies/{pid}", format="csv")
    assert raw.decode("utf-8-sig").splitlines()[0].startswith("推广单位编号,推广单位名称,企业编号,企业名称")

    raw, _ = await _get(bureau, f"/api/promotion/tallies/{pid}", format="xlsx")
    wb = load_workbook(io.BytesIO(raw))
    rows = list(wb["应用企业"].iter_rows(values_only=True))
    assert list(rows[0][9:]) == months
    for row, e in zip(rows[1:], p["enterprise_rows"], strict=True):
        assert row[6] == e["registrations"] and list(row[9:]) == e["registrations_by_month"]
    assert [r[0] for r in wb["推广单位"].iter_rows(min_row=2, values_only=True)] == [pid]
    info = {row[0]: row[1] for row in wb["报告"].iter_rows(min_row=2, values_only=True)}
    assert info["签名报告摘要（SHA-256）"] == digest


async def test_links_and_reading_pooled(bureau):  # noqa: F811
    """The pooled reading states its own rule; the CSV/JSON links of the page keep every parameter."""
    raw, _ = await _get(bureau, "/api/promotion/tallies", mode="pooled")
    report = json.loads(raw)["report"]
    assert "合并计算" in report["rule"]["zh"] and "pooled reading" in report["rule"]["en"]
    assert "逐家计算" not in report["rule"]["zh"]
    assert all("合并计算口径" in p["explanation"]["zh"] for p in report["promoters"] if p["award"]["qualified"])
    page = (await _get(bureau, "/bureau", mode="pooled", lang="en"))[0].decode()
    for link in ("csv-link", "csv-en-link", "xlsx-link", "json-link"):
        href = page.split(f'id="{link}" href="')[1].split('"')[0]
        assert "mode=pooled" in href and "cap=3%3A150000" in href and "as_of=2025-07-01T00%3A00" in href, href


async def test_cli_tally_gives_the_bytes_the_api_gave(bureau, tmp_path):  # noqa: F811
    """`idnode tally show` on the node's store: the same signed JSON bytes as the API for a final snapshot,
    and a CSV that names its digest; `tally verify` prints the key id, fingerprint and digest."""
    from click.testing import CliRunner

    from resolver.cli import main

    data, _ = await _get(bureau, "/api/promotion/tallies")
    digest = hashlib.sha256(data).hexdigest()
    args = ["tally", "show", "--data-dir", str(tmp_path / "data"), "--policy-file", str(tmp_path / "policy.json")]
    args += ["--from", PERIOD["from"], "--to", PERIOD["to"], "--as-of", SNAPSHOT, "--cap", CAPS]
    runner = CliRunner()

    def cli(*argv: str):  # type: ignore[no-untyped-def]
        return asyncio.to_thread(runner.invoke, main, list(argv))  # the CLI runs its own event loop

    out = await cli(*args, "--format", "json")
    assert out.exit_code == 0, out.output
    assert out.stdout_bytes == data
    out = await cli(*args, "--format", "csv")
    assert out.exit_code == 0, out.output
    assert out.stdout_bytes.startswith(b"\xef\xbb\xbf") and digest.encode() in out.stdout_bytes
    assert f"signed JSON SHA-256 {digest}" in out.stderr
    saved = tmp_path / "report.json"
    saved.write_bytes(data)
    out = await cli("tally", "verify", str(saved))
    document = json.loads(data)
    assert out.exit_code == 0 and document["signature"]["key_id"] in out.output
    assert signature_fingerprint(document) in out.output and digest in out.output


def test_names_that_look_like_formulas_stay_text() -> None:
    """A name such as ``=HYPERLINK(…)`` must not become a formula in Excel (CSV or XLSX)."""
    import datetime as dt

    from promotion_tracker.exports import promoters_csv, report_xlsx
    from promotion_tracker.policy import Policy, compute_award
    from promotion_tracker.report import document_bytes, tally_json
    from promotion_tracker.signing import Signer
    from promotion_tracker.tally import EnterpriseRow, PromoterTally, Tally
    from registry.stores.base import Promoter

    evil = '=HYPERLINK("http://example.com","x")'
    rows = [EnterpriseRow(1, "-2+3", "91440100000000001X", "88.118.8.1001", 5, True, False)]
    award = compute_award({"88.118.8.1001": 5}, Policy())
    at = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    tally = Tally(
        dt.date(2025, 1, 1),
        dt.date(2026, 1, 1),
        at,
        at,
        True,
        Policy(),
        [PromoterTally(Promoter(1, evil, "X", 0), rows, award)],
    )
    data = document_bytes(Signer.generate().sign(tally_json(tally, node_prefix="88.118.8", generated_at=at)))
    document = json.loads(data)
    table = list(csv.reader(io.StringIO(promoters_csv(document, "d", lang="en").decode("utf-8-sig"))))
    assert table[1][1] == "'" + evil
    wb = load_workbook(io.BytesIO(report_xlsx(document, "d")))
    cell = wb["推广单位"]["B2"]
    assert cell.value == evil and cell.data_type == "s"
    ent = wb["应用企业"]["D2"]
    assert ent.value == "-2+3" and ent.data_type == "s"
