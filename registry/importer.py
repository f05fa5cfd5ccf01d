"""``idnode import``: stream a CSV or NDJSON file into the registry in chunks, resumably.

Every chunk goes through :class:`registry.batch.BatchValidator` (the same checks, write planner,
store write, counters and write events as the HTTP batch endpoint). After each committed chunk a
checkpoint next to the file records how far the import got; a rerun continues from there. Rows
already registered (the chunk committed but the checkpoint was not saved) are counted as already
present, never twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from registry import valuedata
from registry.admin_values import ADMIN_INDEX, DEFAULT_HANDLE_ADMIN_PERMS, SECKEY_INDEX
from registry.auth import Caller
from registry.batch import BatchValidator
from registry.errors import RC_HANDLE_ALREADY_EXISTS, RC_NOT_AUTHORIZED, HandleError, InvalidRequest
from registry.inputs import UNPAIRED_SURROGATE, has_unpaired_surrogate, json_problem
from registry.model import HandleValue, normalise_prefix, prefix_handle_of
from registry.templates import TEMPLATE_INDEX, TEMPLATE_TYPE, Template

__all__ = ["ImportSummary", "import_file"]

URL_COLUMN = "URL"


@dataclass
class ImportSummary:
    rows: int = 0
    created: int = 0
    replaced: int = 0
    already_present: int = 0
    failed: int = 0
    resumed_from_line: int = 0
    rejects_file: str | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)  # the first few, for the summary


async def _enterprise_admin(registry: Any, caller: Caller, prefix: str) -> HandleValue | None:
    """Handles imported by the node administrator under an enterprise prefix are administered by
    that enterprise, as if it had registered them itself (else it could not change its own)."""
    if not caller.node_admin:
        return None
    enterprise = await registry.store.get_enterprise(prefix)
    if enterprise is None:
        return None
    data = valuedata.encode_admin(prefix_handle_of(enterprise.prefix), SECKEY_INDEX, DEFAULT_HANDLE_ADMIN_PERMS)
    return HandleValue(index=ADMIN_INDEX, type="HS_ADMIN", data=data)


def _checkpoint_path(path: str) -> str:
    return path + ".idnode-progress"


def _file_id(path: str) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _csv_items(
    fh: io.BufferedReader, prefix: str, template: Template | None, start_line: int
) -> Iterator[tuple[int, int, Any]]:
    """(line number, byte offset after the line, item) for each data row of a CSV file."""
    header_line = fh.readline()
    try:
        header = next(csv.reader([header_line.decode("utf-8-sig")]))
    except (UnicodeDecodeError, StopIteration):
        raise InvalidRequest("the CSV file has no UTF-8 header row") from None
    header = [h.strip() for h in header]
    if "suffix" not in header and "handle" not in header:
        raise InvalidRequest("the CSV header needs a 'suffix' (or 'handle') column")
    fields = {f.name: f for f in template.fields} if template else {}
    columns: list[tuple[int, str, int, str]] = []  # (column, name, index, type)
    free_index = 2
    for pos, name in enumerate(header):
        if name in ("suffix", "handle"):
            continue
        if name in fields:
            columns.append((pos, name, fields[name].index, fields[name].type))
        elif name.upper() == URL_COLUMN:
            columns.append((pos, name, 1, URL_COLUMN))
        elif template is None:
            columns.append((pos, name, free_index, name))
            free_index += 1
        else:
            raise InvalidRequest(f"CSV column {name!r} is not a field of template {template.id}@{template.version}")
    key = header.index("suffix") if "suffix" in header else header.index("handle")
    line_no = 1
    for raw in fh:
        line_no += 1
        offset = fh.tell()
        if line_no <= start_line:
            continue
        try:
            row = next(csv.reader([raw.decode("utf-8")]))
        except (UnicodeDecodeError, StopIteration, csv.Error):
            yield line_no, offset, {"_error": f"line {line_no} is not a UTF-8 CSV row"}
            continue
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield line_no, offset, {"_error": f"line {line_no} has {len(row)} columns, the header {len(header)}"}
            continue
        ident = row[key].strip()
        handle = ident if "/" in ident and header[key] == "handle" else f"{prefix}/{ident}"
        values = [
            {"index": index, "type": type_, "data": row[pos]} for pos, _, index, type_ in columns if row[pos] != ""
        ]
        if template is not None:
            values.append({"index": TEMPLATE_INDEX, "type": TEMPLATE_TYPE, "data": f"{template.id}@{template.version}"})
        yield line_no, offset, {"handle": handle, "values": values}


def _ndjson_items(fh: io.BufferedReader, prefix: str, start_line: int) -> Iterator[tuple[int, int, Any]]:
    line_no = 0
    for raw in fh:
        line_no += 1
        offset = fh.tell()
        if line_no <= start_line or not raw.strip():
            continue
        try:
            text = raw.decode("utf-8-sig")
            item = json.loads(text)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError too
            yield line_no, offset, {"_error": f"line {line_no} is not JSON: {json_problem(exc)}"}
            continue
        if has_unpaired_surrogate(text, item):
            yield line_no, offset, {"_error": f"line {line_no}: {UNPAIRED_SURROGATE}"}
            continue
        if isinstance(item, dict) and "handle" not in item and isinstance(item.get("suffix"), str):
            item = {**item, "handle": f"{prefix}/{item.pop('suffix')}"}
        yield line_no, offset, item


async def import_file(
    registry: Any,
    caller: Caller,
    path: str,
    *,
    prefix: str,
    fmt: str,
    template: Template | None = None,
    chunk: int = 5000,
    overwrite: bool = False,
    resume: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import ``path`` (``fmt`` "csv" or "ndjson") under ``prefix``; ``progress`` gets byte offsets."""
    summary = ImportSummary()
    checkpoint = _checkpoint_path(path)
    start_line = 0
    rejects_path = path + ".rejects.ndjson"
    if resume and os.path.exists(checkpoint):
        with open(checkpoint, encoding="utf-8") as fh:
            saved = json.load(fh)
        if saved.get("file") == _file_id(path) and saved.get("prefix") == prefix:
            start_line = saved["line"]
            for k in ("rows", "created", "replaced", "already_present", "failed"):
                setattr(summary, k, saved["summary"].get(k, 0))
            summary.resumed_from_line = start_line
            # Rows rejected after the checkpoint are read again: drop what was written for them.
            if os.path.exists(rejects_path) and os.path.getsize(rejects_path) > saved.get("rejects_bytes", 0):
                os.truncate(rejects_path, saved.get("rejects_bytes", 0))
    rejects = open(rejects_path, "a" if start_line else "w", encoding="utf-8")  # noqa: SIM115
    summary.rejects_file = rejects_path
    target = normalise_prefix(prefix)
    default_admin = await _enterprise_admin(registry, caller, prefix)

    def outside(item: Any) -> str | None:
        """The handle of an item that names a handle under another prefix than ``prefix``."""
        handle = item.get("handle") if isinstance(item, dict) else None
        if not isinstance(handle, str):
            return None
        try:
            name = registry.parse(handle)
        except HandleError:
            return None  # the validator reports it
        return handle if normalise_prefix(name.prefix) != target else None

    def reject(line: int, handle: Any, code: int, message: str) -> None:
        summary.failed += 1
        entry = {"line": line, "handle": handle, "responseCode": code, "message": message}
        rejects.write(json.dumps(entry, ensure_ascii=False) + "\n")
        if len(summary.failures) < 20:
            summary.failures.append(entry)

    async def flush(batch: list[tuple[int, Any]], last_line: int, offset: int) -> None:
        validator = BatchValidator(
            registry.writes, caller, overwrite=overwrite, max_items=len(batch) + 1, default_admin=default_admin
        )
        for _, item in batch:
            await validator.add(item)
        report = await validator.finish(atomic=False)
        summary.rows += len(batch)
        summary.created += report.created
        summary.replaced += report.replaced
        for failure in report.failures:
            line = batch[failure.position][0]
            if failure.code == RC_HANDLE_ALREADY_EXISTS and not overwrite:
                summary.already_present += 1
            else:
                reject(line, failure.handle, failure.code, failure.message)
        rejects.flush()
        state = {
            "file": _file_id(path),
            "prefix": prefix,
            "line": last_line,
            "offset": offset,
            "rejects_bytes": rejects.tell(),
            "summary": {k: v for k, v in asdict(summary).items() if isinstance(v, int)},
        }
        tmp = checkpoint + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        os.replace(tmp, checkpoint)
        if progress is not None:
            progress(offset)

    try:
        with open(path, "rb") as fh:
            items = (
                _csv_items(fh, prefix, template, start_line) if fmt == "csv" else _ndjson_items(fh, prefix, start_line)
            )
            batch: list[tuple[int, Any]] = []
            line, offset = start_line, 0
            for line, offset, item in items:
                if isinstance(item, dict) and "_error" in item:
                    summary.rows += 1
                    reject(line, None, 4, item["_error"])
                    continue
                elsewhere = outside(item)
                if elsewhere is not None:
                    summary.rows += 1
                    reject(line, elsewhere, RC_NOT_AUTHORIZED, f"{elsewhere} is not under the prefix {prefix}")
                    continue
                batch.append((line, item))
                if len(batch) >= chunk:
                    await flush(batch, line, offset)
                    batch = []
            if batch:
                await flush(batch, line, offset)
    finally:
        rejects.close()
    os.remove(checkpoint) if os.path.exists(checkpoint) else None
    if summary.failed == 0 and os.path.exists(rejects_path) and os.path.getsize(rejects_path) == 0:
        os.remove(rejects_path)
        summary.rejects_file = None
    return summary
