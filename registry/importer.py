"""``idnode import``: a CSV, NDJSON or XLSX file into the registry, resumably, with the jobs' machinery.

The rows go through :func:`registry.job_run.run_rows`, as the node's import jobs do: validated as
they are read, written a chunk at a time, a checkpoint after each. The checkpoint lives next to the
file (``FILE.idnode-progress``: the file's size and modification time, the prefix, the line through
which rows are written, the counts), so a rerun of the same command continues after that line.
Rejected rows go to ``FILE.rejects.ndjson`` with their line in the file; a rerun after an
interruption keeps those of lines before the checkpoint and drops the rest (they are read again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from registry.auth import Caller
from registry.job_run import Tally, enterprise_admin, run_rows
from registry.rows import ColumnSpec, RowReader
from registry.stores.base import JobReject
from registry.templates import Template

__all__ = ["ImportSummary", "import_file"]

KEPT_FAILURES = 20  # rejected rows kept in the summary (all of them are in the rejects file)


@dataclass
class ImportSummary:
    rows: int = 0
    created: int = 0
    replaced: int = 0
    already_present: int = 0
    failed: int = 0
    resumed_from_line: int = 0
    line: int = 0  # every row up to this line of the file is written and counted
    interrupted: bool = False  # stopped (Ctrl-C) before the end of the file: rerun to resume
    rejects_file: str | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)  # the first few, for the summary


def _checkpoint_path(path: str) -> str:
    return path + ".idnode-progress"


def _file_id(path: str) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _saved(checkpoint: str, path: str, prefix: str) -> dict[str, Any] | None:
    """The checkpoint of an earlier run of this file under this prefix, if there is one."""
    try:
        with open(checkpoint, encoding="utf-8") as fh:
            saved = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("file") != _file_id(path) or saved.get("prefix") != prefix:
        return None
    if not isinstance(saved.get("tally"), dict):
        return None
    return saved


async def import_file(
    registry: Any,
    caller: Caller,
    path: str,
    *,
    prefix: str,
    fmt: str,
    template: Template | None = None,
    columns: Sequence[ColumnSpec] = (),
    chunk: int = 1000,
    seconds: float = 1.0,
    overwrite: bool = False,
    resume: bool = True,
    stop: asyncio.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import ``path`` (``fmt`` csv, ndjson or xlsx) under ``prefix``. ``progress`` gets the byte
    offset (CSV, NDJSON) or row (XLSX) reached after each chunk; ``stop`` ends the run after the
    chunk being read (``summary.interrupted``)."""
    reader = RowReader(path, fmt, prefix=prefix, template=template, columns=columns)
    reader.check()  # a file whose header cannot be used is refused before anything is written
    summary = ImportSummary()
    checkpoint = _checkpoint_path(path)
    rejects_path = path + ".rejects.ndjson"
    tally = Tally()
    saved = _saved(checkpoint, path, prefix) if resume else None
    if saved is not None:
        known = {f.name for f in dataclasses.fields(Tally)}
        tally = Tally(**{k: v for k, v in saved["tally"].items() if k in known})
        summary.resumed_from_line = tally.line
        # Rows rejected after the checkpoint are read again: drop what was written for them.
        if os.path.exists(rejects_path) and os.path.getsize(rejects_path) > saved.get("rejects_bytes", 0):
            os.truncate(rejects_path, saved.get("rejects_bytes", 0))
    rejects = open(rejects_path, "a" if saved is not None else "w", encoding="utf-8")  # noqa: SIM115
    summary.rejects_file = rejects_path

    async def save(done: Tally, rejected: list[JobReject]) -> None:
        for r in rejected:
            entry = {"line": r.line, "handle": r.handle, "responseCode": r.code, "message": r.message}
            rejects.write(json.dumps(entry, ensure_ascii=False) + "\n")
            if len(summary.failures) < KEPT_FAILURES:
                summary.failures.append(entry)
        rejects.flush()
        state = {
            "file": _file_id(path),
            "prefix": prefix,
            "line": done.line,
            "rejects_bytes": rejects.tell(),
            "tally": dataclasses.asdict(done),
        }
        tmp = checkpoint + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        os.replace(tmp, checkpoint)
        if progress is not None:
            progress(done.offset or done.line)

    try:
        finished = await run_rows(
            registry,
            caller,
            reader,
            kind="replace" if overwrite else "import",
            tally=tally,
            checkpoint=save,
            chunk=chunk,
            seconds=seconds,
            stop=stop,
            default_admin=await enterprise_admin(registry, caller, prefix),
        )
    finally:
        rejects.close()
    summary.rows, summary.created, summary.replaced = tally.processed, tally.created, tally.replaced
    summary.already_present, summary.failed, summary.line = tally.present, tally.rejected, tally.line
    summary.interrupted = not finished
    if finished and os.path.exists(checkpoint):
        os.remove(checkpoint)
    if summary.failed == 0 and os.path.exists(rejects_path) and os.path.getsize(rejects_path) == 0:
        os.remove(rejects_path)
        summary.rejects_file = None
    return summary
