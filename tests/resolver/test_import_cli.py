"""``idnode import`` as an operator runs it (issue 16 §3): a real process interrupted with Ctrl-C
(SIGINT) writes what it read, saves its checkpoint, prints the command that resumes and exits 130;
that command finishes the file and registers nothing twice. Rejected rows are reported by their
line in the file (CSV records spanning lines, XLSX rows)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from registry.service import Registry
from registry.stores import open_store
from resolver.cli.common import EXIT_INTERRUPTED, EXIT_REJECTED
from tests.conftest import ADMIN_SECRET
from tests.nodeproc import IDNODE
from tests.resolver.conftest import make_uscc

ROWS = 30_000


def idnode(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IDNODE, *args], capture_output=True, text=True, timeout=300, **kw)


async def _registry_run(store: str, work: Any) -> Any:
    s = await open_store(store)
    registry = Registry(s)
    try:
        return await work(registry)
    finally:
        registry.close()
        await s.close()


def on_store(store: str, work: Any) -> Any:
    return asyncio.run(_registry_run(store, work))


async def registered(registry: Registry) -> int:
    counts = await registry.store.registration_counts(19700101, 99991231, 2**40)
    return sum(counts.values())


@pytest.fixture
def enterprise(tmp_path: Path) -> tuple[str, str]:
    """(store URL, enterprise prefix) of a store onboarded through the CLI."""
    store = f"sqlite:///{tmp_path}/data/idnode.db"
    on_store(store, lambda r: r.bootstrap(ADMIN_SECRET, None))
    r = idnode("promoter", "add", "--store", store, "--name", "P", "--uscc", make_uscc(1, "92"), "--json")
    assert r.returncode == 0, r.stderr
    promoter = str(json.loads(r.stdout)["id"])
    r = idnode(
        "enterprise", "add", "--store", store, "--name", "E", "--uscc", make_uscc(1), "--promoter", promoter, "--json"
    )
    assert r.returncode == 0, r.stderr
    return store, json.loads(r.stdout)["prefix"]


def test_ctrl_c_saves_the_checkpoint_prints_the_resume_command_and_the_rerun_finishes(enterprise, tmp_path):
    store, prefix = enterprise
    path = tmp_path / "big.csv"
    lines = ["suffix,URL,colour"] + [f"S-{n:06d},https://trace.example.com/{n},c{n % 7}" for n in range(ROWS)]
    lines[1234] = "S-bad,not a url,c0,extra"  # a rejected row at line 1235 of the file
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    checkpoint = Path(f"{path}.idnode-progress")
    args = ["import", str(path), "--enterprise-prefix", prefix, "--store", store, "--chunk", "200"]
    proc = subprocess.Popen(
        [IDNODE, *args, "--column", "colour=COLOUR"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the import ended before it could be interrupted: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, (out, err)
    assert "stopping after the chunk being read" in err
    assert "Aborted" not in err and "Traceback" not in err
    assert "interrupted: the rows up to line" in err and "To resume, run:" in err
    command = err.rsplit("To resume, run:", 1)[1].strip().splitlines()[0]
    words = shlex.split(command)
    assert words[:2] == ["idnode", "import"] and "--column" in words and "colour=COLOUR" in words
    saved = json.loads(checkpoint.read_text())
    line = saved["line"]
    assert f"rows up to line {line} are written" in err
    written = on_store(store, registered)
    assert 0 < written < ROWS - 1
    assert written == saved["tally"]["created"]  # what the checkpoint counts is what the store holds

    done = idnode(*words[1:])
    assert done.returncode == EXIT_REJECTED, (done.stdout, done.stderr)  # finished; one row was rejected
    assert f"resumed after line {line}" in done.stdout
    assert f"rows {ROWS}: created {ROWS - 1}, replaced 0, already present 0, failed 1" in done.stdout
    assert "line 1235: " in done.stderr  # the row's line in the file
    assert on_store(store, registered) == ROWS - 1
    assert not checkpoint.exists()
    rejects = [json.loads(x) for x in Path(f"{path}.rejects.ndjson").read_text().splitlines()]
    assert [(r["line"], r["handle"]) for r in rejects] == [(1235, None)]  # the column count is off

    again = idnode(*words[1:])
    assert again.returncode == EXIT_REJECTED
    assert f"created 0, replaced 0, already present {ROWS - 1}, failed 1" in again.stdout
    assert on_store(store, registered) == ROWS - 1


def test_rejected_rows_are_reported_by_their_line_in_the_file(enterprise, tmp_path):
    store, prefix = enterprise
    path = tmp_path / "multi.csv"
    path.write_text(
        'suffix,URL,note\nA-1,https://e.com/1,"two\nlines"\nA-2,https://e.com/2,ok\nA-3,,"three\nmore\nlines"\n'
        "A-4,https://e.com/4,x,y\nA-5,https://e.com/5,\n",
        encoding="utf-8",
    )
    r = idnode("import", str(path), "--enterprise-prefix", prefix, "--store", store, "--column", "note=NOTE")
    assert r.returncode == EXIT_REJECTED, (r.stdout, r.stderr)
    assert "rows 5: created 4" in r.stdout
    rejects = [json.loads(x) for x in Path(f"{path}.rejects.ndjson").read_text().splitlines()]
    assert [x["line"] for x in rejects] == [8]  # A-4 is on line 8 (A-1 and A-3 span lines)
    assert "line 8: line 8 has 4 columns, the header 3" in r.stderr


def test_an_xlsx_file_with_a_template_and_a_mapped_column(enterprise, tmp_path):
    store, prefix = enterprise
    fields = [{"index": 2001, "name": "model", "type": "MODEL", "required": True}]
    template = tmp_path / "sku.json"
    template.write_text(json.dumps({"id": "sku", "fields": fields}))
    assert idnode("template", "create", str(template), "--store", store).returncode == 0
    book = openpyxl.Workbook()
    sheet = book.active
    for row in (
        ["suffix", "URL", "model", "colour"],
        ["X-1", "https://e.com/1", "M1", "red"],
        ["X-2", "https://e.com/2", None, "blue"],
    ):
        sheet.append(row)
    path = tmp_path / "products.xlsx"
    book.save(path)
    args = ["import", str(path), "--enterprise-prefix", prefix, "--store", store, "--template", "sku@1"]
    refused = idnode(*args)
    assert refused.returncode == 1 and "column 'colour' is not a field of template sku@1" in refused.stderr
    r = idnode(*args, "--column", "colour=COLOUR")
    assert r.returncode == EXIT_REJECTED, (r.stdout, r.stderr)
    assert "rows 2: created 1" in r.stdout and "line 3: " in r.stderr  # the sheet's row 3: model is required

    async def check(registry: Registry) -> None:
        record = await registry.read_record(registry.parse(f"{prefix}/X-1").key)
        assert record is not None
        assert {v.index: (v.type, v.data) for v in record.values if v.index != 100} == {
            1: ("URL", b"https://e.com/1"),
            2: ("COLOUR", b"red"),
            1001: ("TEMPLATE", b"sku@1"),
            2001: ("MODEL", b"M1"),
        }

    on_store(store, check)
