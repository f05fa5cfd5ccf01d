"""The rows of an import or bulk file: CSV, NDJSON, XLSX or a list of suffixes, with their line numbers.

Shared by ``idnode import`` and the jobs API (registry.job_run). Each row is read into the item a
batch takes (``{"handle", "values"}``) or, for a bulk delete, the handle it names, and carries the
line of the file it starts on (the row of the sheet for XLSX) and the byte offset after it, which
checkpoints record so a resumed job seeks there instead of reading the file again.

CSV columns: ``suffix`` (or ``handle``, a whole handle), ``URL`` (index 1), the fields of a
metadata template (``template``) and columns mapped explicitly (``columns``: ``NAME=TYPE[@INDEX]``,
an index chosen from 2 up when none is given). Any other column is refused: it used to be stored as
a value whose type was the column's name, which is seldom what was meant. A CSV record may span
lines (a quoted field with line breaks); it is numbered by its first line.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from registry.errors import InvalidRequest
from registry.inputs import MAX_U32, UNPAIRED_SURROGATE, has_unpaired_surrogate, json_problem, parse_uint
from registry.templates import TEMPLATE_INDEX, TEMPLATE_TYPE, Template

__all__ = ["FORMATS", "ColumnSpec", "Row", "RowReader", "cells_path", "check_file", "parse_column", "write_cells"]

FORMATS = ("csv", "ndjson", "xlsx", "lines")
URL_COLUMN = "URL"
KEY_COLUMNS = ("suffix", "handle")
_TYPE = re.compile(r"^[^\s=@]{1,255}$")
_COUNT_TURN = 1000  # rows counted between two releases of the GIL (RowReader.count)
_SKIPPED_INDEXES = {1, 100, TEMPLATE_INDEX}  # URL, the default HS_ADMIN, the template reference
MAX_COLUMNS = 1000


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """``--column NAME=TYPE[@INDEX]``: the values of CSV column NAME have type TYPE (at INDEX)."""

    name: str
    type: str
    index: int | None = None

    def __str__(self) -> str:
        return f"{self.name}={self.type}" + (f"@{self.index}" if self.index is not None else "")


def parse_column(spec: str) -> ColumnSpec:
    """``COLOUR=COLOUR@2`` → ColumnSpec; InvalidRequest with the rule otherwise."""
    name, sep, rest = spec.partition("=")
    type_, at, index_text = rest.partition("@")
    if not sep or not name.strip() or not _TYPE.match(type_):
        raise InvalidRequest(f"a column mapping is NAME=TYPE[@INDEX], e.g. colour=COLOUR@2; got {spec[:60]!r}")
    index = parse_uint(index_text, f"the index of column {name.strip()!r}", minimum=1, maximum=MAX_U32) if at else None
    return ColumnSpec(name.strip(), type_, index)


@dataclass(frozen=True, slots=True)
class Row:
    """One row: the line it starts on, the line it ends on, the byte offset after it (0 for XLSX),
    and the item it holds, or ``error`` when it could not be read."""

    line: int
    end: int
    offset: int
    item: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Column:
    position: int
    index: int
    type: str


def _cell_text(value: Any) -> str:
    """A spreadsheet cell as the text a CSV file would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


class _Lines:
    """The physical lines of a binary file as text, counting them and the bytes read."""

    def __init__(self, fh: IO[bytes], line: int, offset: int) -> None:
        self.fh = fh
        self.line = line
        self.offset = offset
        self.error: str | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = self.fh.readline()
        if not raw:
            raise StopIteration
        self.line += 1
        self.offset += len(raw)
        if self.line == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.error = f"line {self.line} is not UTF-8"
            raise StopIteration from None


class RowReader:
    """Reads a file of ``fmt`` for a job of ``kind`` (``write``: items with values; ``delete``: handles)
    under ``prefix``."""

    def __init__(
        self,
        path: str,
        fmt: str,
        *,
        prefix: str,
        kind: str = "write",
        template: Template | None = None,
        columns: Sequence[ColumnSpec] = (),
        read_cells: bool = False,
    ) -> None:
        """``read_cells``: read a workbook's rows from the file :func:`write_cells` made beside it, when
        there is one (the node's jobs; ``idnode import`` reads the workbook itself)."""
        if fmt not in FORMATS:
            raise InvalidRequest(f"unknown file format {fmt!r}: one of {', '.join(FORMATS)}")
        if fmt == "lines" and kind != "delete":
            raise InvalidRequest("a list of suffixes (text/plain) is for bulk deletes; imports are CSV, NDJSON or XLSX")
        if kind == "delete" and (template is not None or columns):
            raise InvalidRequest("a bulk delete takes no template or column mappings")
        if fmt in ("ndjson", "lines") and columns:
            raise InvalidRequest("column mappings are for CSV and XLSX files")
        self.path = path
        self.fmt = fmt
        self.prefix = prefix
        self.kind = kind
        self.template = template
        self.columns = tuple(columns)
        self.read_cells = read_cells
        self._plan: tuple[int, list[_Column], bool] | None = None  # key position, value columns, key is "handle"
        self._width = 0  # columns of the header

    # -- header ----------------------------------------------------------------------------------
    def check(self) -> None:
        """Open the file and read its header: InvalidRequest when the file cannot be read as ``fmt``
        or its columns are not known (at submission, before anything is written)."""
        if self.fmt == "csv":
            with open(self.path, "rb") as fh:
                self._csv_header(_Lines(fh, 0, 0))
        elif self.fmt == "xlsx":
            with self._workbook() as rows:
                self._plan_columns(self._xlsx_header(rows))

    def _header_plan(self, header: list[str]) -> tuple[int, list[_Column], bool]:
        names = [h.strip() for h in header]
        lowered = [n.lower() for n in names]
        if len(names) > MAX_COLUMNS:
            raise InvalidRequest(f"the header has {len(names)} columns; at most {MAX_COLUMNS}")
        dupes = sorted({n for n in names if names.count(n) > 1 and n})
        if dupes:
            raise InvalidRequest(f"the header names column {dupes[0]!r} twice")
        keys = [k for k in KEY_COLUMNS if k in lowered]
        if not keys:
            raise InvalidRequest("the header needs a 'suffix' (or 'handle') column")
        key = lowered.index(keys[0])
        if self.kind == "delete":
            return key, [], keys[0] == "handle"
        return key, self._value_columns(names, key), keys[0] == "handle"

    def _value_columns(self, names: list[str], key: int) -> list[_Column]:
        fields = {f.name: f for f in self.template.fields} if self.template else {}
        mapped = {c.name: c for c in self.columns}
        unused = set(mapped) - set(names)
        if unused:
            raise InvalidRequest(f"--column {sorted(unused)[0]}: the file has no such column")
        clash = set(mapped) & set(fields)
        if clash:
            raise InvalidRequest(f"column {sorted(clash)[0]!r} is a field of the template: map it there or here")
        taken = {f.index for f in fields.values()} | {c.index for c in mapped.values() if c.index is not None}
        taken |= _SKIPPED_INDEXES
        out: list[_Column] = []
        free = 2
        for position, name in enumerate(names):
            if position == key:
                continue
            if name in mapped:
                spec = mapped[name]
                index = spec.index
                if index is None:
                    while free in taken:
                        free += 1
                    index = free
                    taken.add(index)
                out.append(_Column(position, index, spec.type))
            elif name in fields:
                out.append(_Column(position, fields[name].index, fields[name].type))
            elif name.upper() == URL_COLUMN:
                out.append(_Column(position, 1, URL_COLUMN))
            elif not name:
                raise InvalidRequest(f"column {position + 1} of the header has no name")
            elif self.template is not None:
                raise InvalidRequest(
                    f"column {name!r} is not a field of template {self.template.id}@{self.template.version}: "
                    f"map it with --column {name}=TYPE[@INDEX] (query column=) or leave it out"
                )
            else:
                raise InvalidRequest(
                    f"column {name!r} is not known: map it with --column {name}=TYPE[@INDEX] (query column=), "
                    f"e.g. --column {name}={name.upper()}, or name a template whose field it is"
                )
        indexes = [c.index for c in out]
        if len(set(indexes)) != len(indexes):
            raise InvalidRequest("two columns map to the same index")
        return out

    def _plan_columns(self, header: list[str]) -> tuple[int, list[_Column], bool]:
        self._plan = self._header_plan(header)
        self._width = len(header)
        return self._plan

    # -- items ------------------------------------------------------------------------------------
    def _handle(self, key: str, is_handle: bool) -> str:
        ident = key.strip()
        return ident if is_handle and "/" in ident else f"{self.prefix}/{ident}"

    def _item(self, cells: list[str], line: int) -> Any:
        key, columns, is_handle = self._plan or (0, [], False)
        handle = self._handle(cells[key], is_handle)
        if self.kind == "delete":
            return handle
        values: list[dict[str, Any]] = [
            {"index": c.index, "type": c.type, "data": cells[c.position]} for c in columns if cells[c.position] != ""
        ]
        if self.template is not None:
            ref = f"{self.template.id}@{self.template.version}"
            values.append({"index": TEMPLATE_INDEX, "type": TEMPLATE_TYPE, "data": ref})
        return {"handle": handle, "values": values}

    def rows(self, start_line: int = 0, start_offset: int = 0) -> Iterator[Row]:
        """The rows after line ``start_line`` (which ends at byte ``start_offset``), in file order."""
        if self.fmt == "xlsx":
            yield from self._xlsx_rows(start_line)
            return
        with open(self.path, "rb") as fh:
            if self.fmt == "csv":
                yield from self._csv_rows(fh, start_line, start_offset)
            elif self.fmt == "ndjson":
                yield from self._ndjson_rows(fh, start_line, start_offset)
            else:
                yield from self._line_rows(fh, start_line, start_offset)

    def count(self) -> int:
        """How many rows the file holds (blank lines are no rows).

        Run in a thread beside the node's event loop, this is pure Python that holds the GIL: the loop,
        which lets go of the GIL at every system call, had to wait for it each time, and a resolve
        answered in ~1 ms took up to 220 ms while 100,000 rows were counted. So the GIL is let go
        (``time.sleep(0)``) every :data:`_COUNT_TURN` rows, ~2 ms of counting."""
        n = 0
        for n, _ in enumerate(self.rows(), 1):
            if not n % _COUNT_TURN:
                time.sleep(0)
        return n

    # -- CSV ---------------------------------------------------------------------------------------
    def _csv_header(self, lines: _Lines) -> tuple[int, list[_Column], bool]:
        try:
            header = next(csv.reader(lines))
        except (StopIteration, csv.Error):
            header = None
        if header is None or lines.error:
            raise InvalidRequest("the CSV file has no UTF-8 header row")
        return self._plan_columns(header)

    def _csv_rows(self, fh: IO[bytes], start_line: int, start_offset: int) -> Iterator[Row]:
        lines = _Lines(fh, 0, 0)
        self._csv_header(lines)
        width = self._width
        if start_offset > lines.offset:
            fh.seek(start_offset)
            lines.line, lines.offset = start_line, start_offset
        reader = csv.reader(lines)
        while True:
            first = lines.line + 1
            try:
                cells = next(reader)
            except StopIteration:
                if lines.error is None:
                    return
                yield Row(lines.line, lines.line, lines.offset, error=lines.error)
                lines.error = None
                reader = csv.reader(lines)
                continue
            except csv.Error as exc:
                yield Row(first, lines.line, lines.offset, error=f"line {first} is not a CSV row: {exc}")
                reader = csv.reader(lines)
                continue
            if not cells or not any(c.strip() for c in cells):
                continue
            if len(cells) != width:
                message = f"line {first} has {len(cells)} columns, the header {width}"
                yield Row(first, lines.line, lines.offset, error=message)
                continue
            yield Row(first, lines.line, lines.offset, self._item(cells, first))

    # -- NDJSON -------------------------------------------------------------------------------------
    def _ndjson_rows(self, fh: IO[bytes], start_line: int, start_offset: int) -> Iterator[Row]:
        line, offset = start_line, start_offset
        fh.seek(start_offset)
        for raw in fh:
            line += 1
            offset += len(raw)
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8-sig")
                item = json.loads(text)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError too
                yield Row(line, line, offset, error=f"line {line} is not JSON: {json_problem(exc)}"[:300])
                continue
            if has_unpaired_surrogate(text, item):
                yield Row(line, line, offset, error=f"line {line}: {UNPAIRED_SURROGATE}")
                continue
            yield Row(line, line, offset, self._json_item(item))

    def _json_item(self, item: Any) -> Any:
        if self.kind == "delete":
            if isinstance(item, str):
                return f"{self.prefix}/{item}"
            if isinstance(item, dict) and isinstance(item.get("handle"), str):
                return item["handle"]
            if isinstance(item, dict) and isinstance(item.get("suffix"), str):
                return f"{self.prefix}/{item['suffix']}"
            return None
        if isinstance(item, dict) and "handle" not in item and isinstance(item.get("suffix"), str):
            item = {**{k: v for k, v in item.items() if k != "suffix"}, "handle": f"{self.prefix}/{item['suffix']}"}
        return item

    # -- a list of suffixes ----------------------------------------------------------------------------
    def _line_rows(self, fh: IO[bytes], start_line: int, start_offset: int) -> Iterator[Row]:
        line, offset = start_line, start_offset
        fh.seek(start_offset)
        for raw in fh:
            line += 1
            offset += len(raw)
            try:
                text = raw.decode("utf-8-sig" if line == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                yield Row(line, line, offset, error=f"line {line} is not UTF-8")
                continue
            if text:
                yield Row(line, line, offset, f"{self.prefix}/{text}")

    # -- XLSX ----------------------------------------------------------------------------------------
    def _workbook(self) -> Any:
        from contextlib import contextmanager

        import openpyxl
        from openpyxl.utils.exceptions import InvalidFileException

        cells = cells_path(self.path)
        if self.read_cells and os.path.exists(cells):  # the rows write_cells read in the helper process

            @contextmanager
            def read_back() -> Iterator[Iterator[tuple[Any, ...]]]:
                with open(cells, "rb") as fh:
                    yield (tuple(json.loads(line)) for line in fh)

            return read_back()

        @contextmanager
        def opened() -> Iterator[Iterator[tuple[Any, ...]]]:
            # A file object, not the path: openpyxl judges a path by its extension (uploads are *.tmp).
            with open(self.path, "rb") as fh:
                try:
                    book = openpyxl.load_workbook(fh, read_only=True, data_only=True)
                except (InvalidFileException, OSError, KeyError, ValueError, EOFError) as exc:
                    raise InvalidRequest(f"the file is not an XLSX workbook ({type(exc).__name__})") from None
                except Exception as exc:  # zipfile.BadZipFile and the XML parser's errors
                    raise InvalidRequest(f"the file is not an XLSX workbook ({type(exc).__name__})") from None
                try:
                    if not book.worksheets:
                        raise InvalidRequest("the workbook has no sheet")
                    yield book.worksheets[0].iter_rows(values_only=True)
                finally:
                    book.close()

        return opened()

    def _xlsx_header(self, rows: Iterator[tuple[Any, ...]]) -> list[str]:
        try:
            first = next(rows)
        except StopIteration:
            raise InvalidRequest("the first sheet is empty: it needs a header row") from None
        header = [_cell_text(c) for c in first]
        while header and not header[-1]:
            header.pop()
        return header

    def _xlsx_rows(self, start_line: int) -> Iterator[Row]:
        with self._workbook() as rows:
            header = self._xlsx_header(rows)
            self._plan_columns(header)
            width = len(header)
            for line, cells in enumerate(rows, start=2):
                if line <= start_line:
                    continue
                texts = [_cell_text(c) for c in cells]
                while len(texts) > width and not texts[-1]:
                    texts.pop()
                if not any(t.strip() for t in texts):
                    continue
                if len(texts) > width:
                    yield Row(line, line, 0, error=f"row {line} has {len(texts)} cells, the header {width}")
                    continue
                texts += [""] * (width - len(texts))
                yield Row(line, line, 0, self._item(texts, line))


def cells_path(path: str) -> str:
    """Where :func:`write_cells` keeps the rows of the workbook at ``path``."""
    return path + ".cells"


def write_cells(path: str) -> str | None:
    """Read the first sheet of the workbook at ``path`` once and keep its rows beside it, as the text
    of their cells (one JSON array a row, every row, blank ones too, so row numbers stay), for a
    :class:`RowReader` of ``path`` to read instead of the workbook. None, or why the file is not a
    workbook. For the node's helper process (:mod:`registry.offload`): openpyxl spends ~0.9 s of pure
    Python opening a workbook of 100,000 rows (its shared strings), which starved the event loop on a
    thread and blocked it outright on the loop; the rows are then read back as cheaply as CSV."""
    if os.path.exists(cells_path(path)):
        return None  # read already (a job resumed on this machine)
    reader = RowReader(path, "xlsx", prefix="")
    spool = f"{cells_path(path)}.{os.getpid()}.spool"  # each process its own: several may run one job's file
    try:
        with reader._workbook() as rows, open(spool, "w", encoding="ascii") as out:
            for cells in rows:
                out.write(json.dumps([_cell_text(c) for c in cells]))
                out.write("\n")
        os.replace(spool, cells_path(path))
    except Exception as exc:  # a message, not an exception (it may not pickle back; see registry.offload)
        with contextlib.suppress(OSError):
            os.remove(spool)
        if isinstance(exc, InvalidRequest):
            return exc.message
        if isinstance(exc, OSError):
            return f"the file could not be read ({type(exc).__name__}: {exc.strerror or exc})"
        return f"the file is not an XLSX workbook ({type(exc).__name__})"
    return None


def check_file(reader: RowReader) -> str | None:
    """:meth:`RowReader.check`, for the helper process: None, or why the file is refused."""
    try:
        reader.check()
    except InvalidRequest as exc:
        return exc.message
    except OSError as exc:
        return f"the file could not be read ({type(exc).__name__}: {exc.strerror or exc})"
    except Exception as exc:  # a message, not an exception (it may not pickle back; see registry.offload)
        return f"the file is not an XLSX workbook ({type(exc).__name__})"
    return None
