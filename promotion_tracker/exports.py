"""CSV and XLSX made from a signed report (the document, not the tally), for the bureau's offices.

CSV starts with a UTF-8 byte-order mark (Excel on a Chinese Windows reads UTF-8 without it as GBK and
garbles every name) and has its headers in Chinese, or in English (``lang=en``). The XLSX has a
report sheet (period, snapshot, reading, rule, key id, digests), a promoters sheet and an
enterprises sheet. Both carry the SHA-256 of the signed JSON they were made from, and both are
byte-for-byte the same whenever they are made from the same document. No I/O here.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.writer.excel import ExcelWriter

from promotion_tracker.report import signature_fingerprint

__all__ = ["enterprises_csv", "promoters_csv", "report_xlsx"]

BOM = "\ufeff"
BEIJING = dt.timezone(dt.timedelta(hours=8), "UTC+8")

# (English name, Chinese header) of every column; the English names are the CSV's lang=en headers.
PROMOTER_COLUMNS = [
    ("promoter_id", "推广单位编号"),
    ("promoter_name", "推广单位名称"),
    ("promoter_uscc", "统一社会信用代码"),
    ("enterprises", "推广应用企业数"),
    ("eligible_enterprises", "有效企业数"),
    ("registrations", "标识注册量"),
    ("increment_enterprises", "增量企业数"),
    ("base_yuan", "基础奖励（元）"),
    ("increment_yuan", "增量奖励（元）"),
    ("uncapped_yuan", "封顶前金额（元）"),
    ("award_yuan", "奖励金额（元）"),
    ("qualified", "是否达到基础条件"),
    ("capped_by", "封顶原因"),
    ("contribution_cap_yuan", "第十七条限额（元）"),
    ("mode", "计算口径"),
    ("period_from", "统计期间起"),
    ("period_to", "统计期间止（不含）"),
    ("as_of", "快照时间（北京时间）"),
    ("final", "是否定稿"),
    ("explanation", "说明"),
    ("report_sha256", "签名报告摘要（SHA-256）"),
]
ENTERPRISE_COLUMNS = [
    ("promoter_id", "推广单位编号"),
    ("promoter_name", "推广单位名称"),
    ("enterprise_id", "企业编号"),
    ("enterprise_name", "企业名称"),
    ("enterprise_uscc", "统一社会信用代码"),
    ("prefix", "企业前缀"),
    ("registrations", "期间标识注册量"),
    ("eligible", "是否有效企业"),
    ("increment", "是否计为增量企业"),
]
_MODES = {"per_enterprise": "逐家计算", "pooled": "合并计算"}
_CAPS = {"policy_cap": "奖励上限", "contribution_cap": "第十七条限额"}
INT_FORMAT = "#,##0"


def beijing_time(iso: str) -> str:
    """``2025-06-01T19:00:00Z`` → ``2025-06-02T03:00:00+08:00``."""
    t = dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(BEIJING)
    return t.isoformat()


def _yes(value: bool, zh: bool) -> str:
    if zh:
        return "是" if value else "否"
    return "yes" if value else "no"


def _promoter_row(report: dict[str, Any], p: dict[str, Any], digest: str, zh: bool) -> list[Any]:
    a = p["award"]
    capped = a["capped_by"] or ""
    return [
        p["promoter"]["id"],
        p["promoter"]["name"],
        p["promoter"]["uscc"],
        p["enterprises"],
        p["eligible_enterprises"],
        p["registrations"],
        a["increment_enterprises"],
        a["base_yuan"],
        a["increment_yuan"],
        a["uncapped_yuan"],
        p["award_yuan"],
        _yes(a["qualified"], zh),
        _CAPS.get(capped, capped) if zh else capped,
        p.get("contribution_cap_yuan"),
        _MODES.get(a["mode"], a["mode"]) if zh else a["mode"],
        report["period"]["from"],
        report["period"]["to"],
        beijing_time(report["as_of"]),
        _yes(report["final"], zh),
        p["explanation"]["zh" if zh else "en"],
        digest,
    ]


def _enterprise_rows(report: dict[str, Any], zh: bool) -> list[list[Any]]:
    rows = []
    for p in report["promoters"]:
        for e in p["enterprise_rows"]:
            row = [
                p["promoter"]["id"],
                p["promoter"]["name"],
                e["id"],
                e["name"],
                e["uscc"],
                e["prefix"],
                e["registrations"],
                _yes(e["eligible"], zh),
                _yes(e["increment"], zh),
            ]
            rows.append(row + list(e.get("registrations_by_month", [])))
    return rows


def _headers(columns: list[tuple[str, str]], zh: bool) -> list[str]:
    return [cn if zh else en for en, cn in columns]


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """A text that a spreadsheet would run as a formula (a name like ``=HYPERLINK(…)``) is written
    with a leading apostrophe, as OWASP advises for CSV; numbers are written as they are."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv(header: list[str], rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    buf.write(BOM)
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows([[_csv_cell(v) for v in row] for row in rows])
    return buf.getvalue().encode("utf-8")


def promoters_csv(document: dict[str, Any], digest: str, *, lang: str = "zh") -> bytes:
    """One row per promoter; the last column is the digest of the signed JSON."""
    zh = lang != "en"
    report = document["report"]
    rows = [_promoter_row(report, p, digest, zh) for p in report["promoters"]]
    return _csv(_headers(PROMOTER_COLUMNS, zh), rows)


def enterprises_csv(document: dict[str, Any], digest: str, *, lang: str = "zh") -> bytes:
    """One row per enterprise (the per-promoter report), with its registrations per month when the
    report has them; the last column is the digest of the signed JSON."""
    zh = lang != "en"
    report = document["report"]
    header = _headers(ENTERPRISE_COLUMNS, zh) + list(report.get("months", []))
    header.append(_headers(PROMOTER_COLUMNS[-1:], zh)[0])
    return _csv(header, [[*row, digest] for row in _enterprise_rows(report, zh)])


class _FixedTimeZip(zipfile.ZipFile):
    """A zip whose entries all carry one date, so the same workbook gives the same bytes."""

    def writestr(self, zinfo_or_arcname, data, compress_type=None, compresslevel=None):  # type: ignore[no-untyped-def,override]
        if isinstance(zinfo_or_arcname, str):
            zinfo_or_arcname = zipfile.ZipInfo(zinfo_or_arcname, date_time=(1980, 1, 1, 0, 0, 0))
            zinfo_or_arcname.compress_type = zipfile.ZIP_DEFLATED
        super().writestr(zinfo_or_arcname, data, compress_type, compresslevel)

    def write(self, filename, arcname=None, compress_type=None, compresslevel=None):  # type: ignore[no-untyped-def,override]
        # openpyxl streams write-only sheets through a temporary file, whose time would go in the entry.
        with open(filename, "rb") as f:
            self.writestr(arcname or filename, f.read(), compress_type, compresslevel)


_HEAD_FONT = Font(bold=True)
_HEAD_FILL = PatternFill("solid", fgColor="F2F5F8")
_WRAP = Alignment(wrap_text=True, vertical="top")


def _sheet(wb: Workbook, title: str, header: list[str], rows: list[list[Any]], widths: dict[int, int]) -> None:
    """A write-only sheet (streamed: thousands of rows stay quick): bold header, frozen, integers
    with thousands separators, long text wrapped."""
    ws = wb.create_sheet(title)
    for i in range(1, len(header) + 1):
        ws.column_dimensions[get_column_letter(i)].width = widths.get(i, 14)
    ws.freeze_panes = "A2"
    head = []
    for text in header:
        cell = WriteOnlyCell(ws, value=text)
        cell.font, cell.fill, cell.alignment = _HEAD_FONT, _HEAD_FILL, _WRAP
        head.append(cell)
    ws.append(head)
    wrap = {i - 1 for i, w in widths.items() if w >= 60}
    for row in rows:
        out: list[Any] = []
        for i, value in enumerate(row):
            if isinstance(value, int) and not isinstance(value, bool):
                cell = WriteOnlyCell(ws, value=value)
                cell.number_format = INT_FORMAT
                out.append(cell)
            elif isinstance(value, str) and (i in wrap or value.startswith("=")):
                cell = WriteOnlyCell(ws, value=value)
                cell.data_type = "s"  # text, never a formula (openpyxl takes "=…" for one)
                if i in wrap:
                    cell.alignment = _WRAP
                out.append(cell)
            else:
                out.append(value)
        ws.append(out)


def report_xlsx(document: dict[str, Any], digest: str, *, lang: str = "zh") -> bytes:
    """Report, promoters and enterprises sheets; the report sheet names the digest of the signed
    JSON, its key id and signature fingerprint."""
    zh = lang != "en"
    report, signature = document["report"], document["signature"]
    wb = Workbook(write_only=True)
    snapshot = beijing_time(report["as_of"])
    mode = report["policy"]["mode"]
    status = ("定稿" if report["final"] else "实时") if zh else ("final" if report["final"] else "live")
    facts = [
        ("节点前缀" if zh else "Node prefix", report["node_prefix"]),
        ("统计期间起" if zh else "Period from", report["period"]["from"]),
        ("统计期间止（不含）" if zh else "Period to (exclusive)", report["period"]["to"]),
        ("快照时间（北京时间）" if zh else "Snapshot (Beijing time)", snapshot),
        ("状态" if zh else "Status", status),
        ("计算口径" if zh else "Reading", _MODES.get(mode, mode) if zh else mode),
        ("规则" if zh else "Rule", report["rule"]["zh" if zh else "en"]),
        ("奖励合计（元）" if zh else "Total award (CNY)", report["total_award_yuan"]),
        ("签名算法" if zh else "Signature algorithm", signature["alg"]),
        ("签名密钥编号" if zh else "Key id", signature["key_id"]),
        ("签名指纹" if zh else "Signature fingerprint", signature_fingerprint(document)),
        ("签名报告摘要（SHA-256）" if zh else "Signed report SHA-256", digest),
    ]
    info_header = ["项目" if zh else "Item", "内容" if zh else "Value"]
    _sheet(wb, "报告" if zh else "Report", info_header, [list(f) for f in facts], {1: 24, 2: 100})
    rows = [_promoter_row(report, p, digest, zh) for p in report["promoters"]]
    _sheet(wb, "推广单位" if zh else "Promoters", _headers(PROMOTER_COLUMNS, zh), rows, {2: 28, 3: 22, 20: 60, 21: 66})
    header = _headers(ENTERPRISE_COLUMNS, zh) + list(report.get("months", []))
    widths = {2: 28, 4: 28, 5: 22, 6: 16}
    _sheet(wb, "应用企业" if zh else "Enterprises", header, _enterprise_rows(report, zh), widths)
    at = dt.datetime.fromisoformat(report["as_of"].replace("Z", "+00:00")).replace(tzinfo=None)
    wb.properties.creator = wb.properties.lastModifiedBy = "idnode"
    wb.properties.created = wb.properties.modified = at
    wb.properties.title = "标识解析推广奖励" if zh else "Identifier-resolution promotion award"
    wb.properties.identifier = f"sha256:{digest}"
    buf = io.BytesIO()
    ExcelWriter(wb, _FixedTimeZip(buf, "w", zipfile.ZIP_DEFLATED, allowZip64=True)).save()
    return buf.getvalue()
