"""registry.rows: the rows of CSV, NDJSON, XLSX and suffix-list files, with their line numbers and
byte offsets, and the column rules (unknown columns refused, ``--column`` mappings)."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import openpyxl
import pytest

from registry.errors import InvalidRequest
from registry.rows import ColumnSpec, RowReader, cells_path, check_file, parse_column, write_cells
from registry.templates import Template, TemplateField

P = "88.118.8.1001"
TEMPLATE = Template(
    "sku",
    2,
    "",
    (TemplateField(2001, "model", "MODEL", required=True), TemplateField(2002, "batch", "BATCH")),
)


def write(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


def test_csv_rows_carry_the_line_they_start_on_and_the_offset_after_them(tmp_path):
    text = (
        "\ufeffsuffix,URL\n"
        "A-1,https://e.com/1\n"
        "\n"  # a blank line: no row, but a line
        'A-2,"https://e.com/2\nsecond line"\n'  # a quoted field with a line break: lines 4-5
        "A-3,https://e.com/3\r\n"
        "A-4\n"  # a column short
    )
    path = write(tmp_path, "a.csv", text)
    rows = list(RowReader(path, "csv", prefix=P).rows())
    assert [(r.line, r.end) for r in rows] == [(2, 2), (4, 5), (6, 6), (7, 7)]
    assert rows[0].item == {"handle": f"{P}/A-1", "values": [{"index": 1, "type": "URL", "data": "https://e.com/1"}]}
    assert rows[1].item["values"][0]["data"] == "https://e.com/2\nsecond line"
    assert rows[2].item["values"][0]["data"] == "https://e.com/3"
    assert rows[3].error == "line 7 has 1 columns, the header 2"
    data = Path(path).read_bytes()
    ends = [data.index(b"\n", data.index(m)) + 1 for m in (b"A-1", b"second", b"A-3", b"A-4")]
    assert [r.offset for r in rows] == ends
    # Resuming after a row reads what follows it, with the same lines, without reading what came before.
    again = list(RowReader(path, "csv", prefix=P).rows(rows[1].end, rows[1].offset))
    assert again == rows[2:]
    assert RowReader(path, "csv", prefix=P).count() == 4


def test_a_csv_line_that_is_not_utf8_is_a_rejected_row_and_the_rest_goes_on(tmp_path):
    path = write(tmp_path, "b.csv", b"suffix,URL\nA-1,https://e.com/1\nA-2,https://e.com/\xff\nA-3,https://e.com/3\n")
    rows = list(RowReader(path, "csv", prefix=P).rows())
    assert [(r.line, r.error) for r in rows] == [(2, None), (3, "line 3 is not UTF-8"), (4, None)]
    assert rows[2].item["handle"] == f"{P}/A-3"


def test_unknown_columns_are_refused_and_column_mappings_take_them(tmp_path):
    path = write(tmp_path, "c.csv", "suffix,url,colour,weight\nA-1,https://e.com/1,red,\n")
    refusal = re.escape("'colour' is not known: map it with --column colour=TYPE[@INDEX]")
    with pytest.raises(InvalidRequest, match=refusal):
        RowReader(path, "csv", prefix=P).check()
    columns = [parse_column("colour=COLOUR"), parse_column("weight=WEIGHT@2010")]
    (row,) = RowReader(path, "csv", prefix=P, columns=columns).rows()
    # URL at 1, colour at the first free index (2), weight where it was told; an empty cell is no value.
    assert row.item["values"] == [
        {"index": 1, "type": "URL", "data": "https://e.com/1"},
        {"index": 2, "type": "COLOUR", "data": "red"},
    ]
    with pytest.raises(InvalidRequest, match="--column size: the file has no such column"):
        RowReader(path, "csv", prefix=P, columns=[*columns, ColumnSpec("size", "SIZE")]).check()


def test_template_columns_and_a_mapping_beside_them(tmp_path):
    path = write(tmp_path, "d.csv", "suffix,URL,model,batch,colour\nA-1,https://e.com/1,M1,B1,red\n")
    with pytest.raises(InvalidRequest, match="'colour' is not a field of template sku@2"):
        RowReader(path, "csv", prefix=P, template=TEMPLATE).check()
    (row,) = RowReader(path, "csv", prefix=P, template=TEMPLATE, columns=[ColumnSpec("colour", "COLOUR", 5)]).rows()
    assert {v["index"]: (v["type"], v["data"]) for v in row.item["values"]} == {
        1: ("URL", "https://e.com/1"),
        2001: ("MODEL", "M1"),
        2002: ("BATCH", "B1"),
        5: ("COLOUR", "red"),
        1001: ("TEMPLATE", "sku@2"),
    }
    with pytest.raises(InvalidRequest, match="is a field of the template"):
        RowReader(path, "csv", prefix=P, template=TEMPLATE, columns=[ColumnSpec("model", "X")]).check()


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("id,URL", "needs a 'suffix' (or 'handle') column"),
        ("suffix,URL,URL", "names column 'URL' twice"),
        ("suffix,,URL", "column 2 of the header has no name"),
    ],
)
def test_bad_headers_are_refused_before_any_row(tmp_path, header, words):
    path = write(tmp_path, "e.csv", f"{header}\nA,B,C\n")
    with pytest.raises(InvalidRequest, match=re.escape(words)):
        RowReader(path, "csv", prefix=P).check()


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [("colour=COLOUR", ColumnSpec("colour", "COLOUR")), (" 颜色 =COLOUR@7", ColumnSpec("颜色", "COLOUR", 7))],
)
def test_column_specs(spec, parsed):
    assert parse_column(spec) == parsed
    assert parse_column(str(parsed)) == parsed


@pytest.mark.parametrize("spec", ["colour", "=X", "colour=", "colour=A B", "colour=X@0", "colour=X@²", "colour=X@-1"])
def test_bad_column_specs(spec):
    with pytest.raises(InvalidRequest):
        parse_column(spec)


def test_ndjson_rows_with_suffix_or_handle_and_bad_lines(tmp_path):
    text = (
        '{"suffix":"A-1","values":[{"index":1,"type":"URL","data":"x"}]}\n'
        "\n"
        "{not json\n"
        f'{{"handle":"{P}/A-2","values":[]}}\n'
        '{"suffix":"s","values":[{"index":1,"type":"URL","data":"\\ud800"}]}\n'
    )
    path = write(tmp_path, "f.ndjson", text)
    rows = list(RowReader(path, "ndjson", prefix=P).rows())
    assert [r.line for r in rows] == [1, 3, 4, 5]
    assert rows[0].item["handle"] == f"{P}/A-1" and "suffix" not in rows[0].item
    assert rows[1].error is not None and rows[1].error.startswith("line 3 is not JSON")
    assert rows[2].item["handle"] == f"{P}/A-2"
    assert rows[3].error is not None and "surrogate" in rows[3].error
    assert list(RowReader(path, "ndjson", prefix=P).rows(rows[1].line, rows[1].offset)) == rows[2:]


def test_a_suffix_list_for_deletes(tmp_path):
    path = write(tmp_path, "g.txt", "\ufeffA-1\n\n  A-2  \nA/3\n")
    rows = list(RowReader(path, "lines", prefix=P, kind="delete").rows())
    assert [(r.line, r.item) for r in rows] == [(1, f"{P}/A-1"), (3, f"{P}/A-2"), (4, f"{P}/A/3")]
    csv_path = write(tmp_path, "g.csv", f"handle,note\n{P}/A-1,old\nA-2,old\n")
    assert [r.item for r in RowReader(csv_path, "csv", prefix=P, kind="delete").rows()] == [f"{P}/A-1", f"{P}/A-2"]
    with pytest.raises(InvalidRequest, match="for bulk deletes"):
        RowReader(path, "lines", prefix=P)


def test_xlsx_rows_are_the_first_sheets_rows_with_cells_as_text(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["suffix", "URL", "colour", "made"])
    sheet.append(["A-1", "https://e.com/1", "red", dt.date(2026, 1, 15)])
    sheet.append([None, None, None, None])  # an empty row: no row
    sheet.append([1002, "https://e.com/2", 3.0, None])  # numbers as a CSV would hold them
    sheet.append(["A-3", "https://e.com/3", "blue", None, "extra"])
    book.create_sheet("other").append(["ignored"])
    path = str(tmp_path / "h.xlsx")
    book.save(path)
    columns = [ColumnSpec("colour", "COLOUR"), ColumnSpec("made", "MADE")]
    reader = RowReader(path, "xlsx", prefix=P, columns=columns)
    reader.check()
    rows = list(reader.rows())
    assert [r.line for r in rows] == [2, 4, 5]
    assert rows[0].item["values"] == [
        {"index": 1, "type": "URL", "data": "https://e.com/1"},
        {"index": 2, "type": "COLOUR", "data": "red"},
        {"index": 3, "type": "MADE", "data": "2026-01-15T00:00:00"},
    ]
    assert rows[1].item["handle"] == f"{P}/1002" and rows[1].item["values"][1]["data"] == "3"
    assert rows[2].error == "row 5 has 5 cells, the header 4"
    assert list(RowReader(path, "xlsx", prefix=P, columns=columns).rows(4)) == rows[2:]
    with pytest.raises(InvalidRequest, match="'colour' is not known"):
        RowReader(path, "xlsx", prefix=P).check()


def test_a_file_that_is_no_workbook_is_refused(tmp_path):
    path = write(tmp_path, "i.xlsx", "suffix,URL\nA,B\n")
    with pytest.raises(InvalidRequest, match="not an XLSX workbook"):
        RowReader(path, "xlsx", prefix=P).check()
    assert write_cells(path) == "the file is not an XLSX workbook (BadZipFile)"
    assert not os.path.exists(cells_path(path)) and not os.path.exists(cells_path(path) + ".spool")


def test_a_workbook_read_once_gives_the_same_rows(tmp_path):
    """``write_cells`` (the node's helper process reads a workbook once): a reader of the file then
    reads its rows back, the same rows, errors and row numbers as from the workbook itself."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["suffix", "URL", "colour", "made", None])
    sheet.append(["A-1", "https://e.com/1", "红", dt.datetime(2026, 1, 15, 8, 30)])
    sheet.append([None, None, None, None])
    sheet.append([1002, "https://e.com/2", 3.0, True])
    sheet.append(["A-三", "https://e.com/3", "blue", None, "extra"])  # a cell too many
    sheet.append(["A-4", "https://e.com/4", 2.5, dt.time(9, 15)])
    path = str(tmp_path / "w.xlsx")
    book.save(path)
    columns = [ColumnSpec("colour", "COLOUR"), ColumnSpec("made", "MADE")]
    direct = list(RowReader(path, "xlsx", prefix=P, columns=columns).rows())
    assert write_cells(path) is None and os.path.exists(cells_path(path))
    reader = RowReader(path, "xlsx", prefix=P, columns=columns, read_cells=True)
    reader.check()
    assert list(reader.rows()) == direct and len(direct) == 4
    assert reader.count() == 4
    assert list(reader.rows(4)) == direct[2:]  # resumed after row 4
    assert write_cells(path) is None  # read already: kept
    # The header is checked from what was read, as from the workbook.
    with pytest.raises(InvalidRequest, match="'colour' is not known"):
        RowReader(path, "xlsx", prefix=P, read_cells=True).check()
    assert "'colour' is not known" in (check_file(RowReader(path, "xlsx", prefix=P, read_cells=True)) or "")
    assert check_file(reader) is None
    # Only a reader told to (the node's jobs) reads the file beside the workbook; `idnode import` never.
    with open(cells_path(path), "a", encoding="ascii") as fh:
        fh.write('["A-9", "https://e.com/9", "", ""]\n')
    assert len(list(RowReader(path, "xlsx", prefix=P, columns=columns, read_cells=True).rows())) == 5
    assert list(RowReader(path, "xlsx", prefix=P, columns=columns).rows()) == direct


def test_a_workbook_broken_half_way_is_refused_by_message_and_leaves_no_file(tmp_path):
    """What the helper process returns is a message, whatever the workbook's fault (an exception of
    the XML parser or of zipfile could not always be sent back), and no spool is left behind."""
    import zipfile

    book = openpyxl.Workbook()
    for n in range(2000):
        book.active.append([f"S-{n}", f"https://e.com/{n}"])
    good = tmp_path / "good.xlsx"
    book.save(good)
    broken = tmp_path / "broken.xlsx"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("sheet1.xml"):
                data = data[: len(data) // 2]  # the sheet cut off in the middle of its rows
            dst.writestr(item, data)
    message = write_cells(str(broken))
    assert message is not None and message.startswith("the file is not an XLSX workbook (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.xlsx", "good.xlsx"]
    assert check_file(RowReader(str(tmp_path / "missing.xlsx"), "xlsx", prefix=P)) is not None
