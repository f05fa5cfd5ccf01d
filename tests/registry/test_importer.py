"""``idnode import`` and :func:`registry.importer.import_file` on both stores: CSV with template
columns, NDJSON with ``suffix``, rejected rows, resuming after an interruption without duplicates,
``--restart`` and ``--overwrite``."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from registry import valuedata
from registry.auth import Caller, Identity
from registry.importer import import_file
from registry.model import normalise_prefix, parse_handle, prefix_handle_of
from registry.service import NodeSettings, Registry
from registry.stores import open_store
from resolver.cli import main
from resolver.cli.common import EXIT_FAILED
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import make_uscc

NODE = "88.118.8"
FIELDS = [
    {"index": 2001, "name": "model", "type": "MODEL", "required": True, "max_length": 8},
    {"index": 2002, "name": "batch", "type": "BATCH", "pattern": "B[0-9]{4}"},
]


def node_admin() -> Caller:
    handle = prefix_handle_of(NODE)
    return Caller(identity=Identity(300, handle, parse_handle(handle).key), node_admin=True)


async def _registry(url: str) -> tuple[Any, Registry]:
    store = await open_store(url)
    return store, Registry(store, NodeSettings(prefix=NODE))


def run(url: str, work: Callable[[Registry], Any]) -> Any:
    """Run ``await work(registry)`` on its own store connection (for the synchronous CLI tests)."""

    async def go() -> Any:
        store, registry = await _registry(url)
        try:
            return await work(registry)
        finally:
            await store.close()

    return asyncio.run(go())


async def counts(registry: Registry) -> dict[int, int]:
    found = await registry.store.registration_counts(19700101, 99991231, 2**40)
    return {k: v for k, v in found.items() if v}


async def handles_under(registry: Registry, prefix: str) -> list[str]:
    total, page = await registry.store.list_handles(normalise_prefix(prefix), 0, 100_000)
    assert total == len(page)
    return page


async def onboard(registry: Registry, n: int = 1) -> Any:
    caller = node_admin()
    if await registry.read_record(parse_handle(prefix_handle_of(NODE)).key) is None:
        await registry.bootstrap(ADMIN_SECRET, None)
    promoter = await registry.add_promoter(caller, f"Promoter {n}", make_uscc(n, "92"))
    enterprise, _ = await registry.add_enterprise(caller, f"Enterprise {n}", make_uscc(n), promoter.id)
    return enterprise


@pytest.fixture
async def node(store_url: str) -> AsyncIterator[tuple[Registry, Any]]:
    store, registry = await _registry(store_url)
    try:
        yield registry, await onboard(registry)
    finally:
        await store.close()


def write_ndjson(path: Path, rows: list[Any]) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return str(path)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    return str(path)


def url_row(n: int, **extra: Any) -> dict[str, Any]:
    return {"suffix": f"SKU-{n:05d}", "values": [{"index": 1, "type": "URL", "data": f"https://e.com/{n}"}], **extra}


def rejects_of(path: str) -> list[dict[str, Any]]:
    with open(path + ".rejects.ndjson", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


class Interrupt:
    """A progress callback that interrupts the import once, after the ``after``-th committed chunk."""

    def __init__(self, after: int = 1) -> None:
        self.calls = 0
        self.after = after

    def __call__(self, offset: int) -> None:
        self.calls += 1
        if self.calls == self.after:
            raise KeyboardInterrupt


# -- import_file -----------------------------------------------------------------------------------
async def test_ndjson_with_suffix_and_handle(node, tmp_path):
    registry, ent = node
    p = ent.prefix
    path = write_ndjson(
        tmp_path / "items.ndjson",
        [
            url_row(1),
            {"handle": f"{p}/by-handle", "values": [{"index": 1, "type": "URL", "data": "https://e.com/h"}]},
            "",
            "{not json",
            url_row(2, values=[{"index": 1, "type": "URL", "data": "https://e.com/产品/✓"}]),
            {"suffix": "no-values"},
            url_row(1),  # a duplicate inside the chunk
            ["not", "an", "object"],
        ],
    )
    summary = await import_file(registry, node_admin(), path, prefix=p, fmt="ndjson")
    assert (summary.rows, summary.created, summary.failed) == (7, 3, 4), summary
    assert summary.rejects_file == path + ".rejects.ndjson"
    rejects = rejects_of(path)
    assert [r["line"] for r in sorted(rejects, key=lambda r: r["line"])] == [4, 6, 7, 8]
    assert all(set(r) == {"line", "handle", "responseCode", "message"} for r in rejects)
    assert {r["line"]: r["handle"] for r in rejects}[6] == f"{p}/no-values"
    record = await registry.read_record(parse_handle(f"{p}/SKU-00002").key)
    assert record is not None and record.value_at(1).data.decode() == "https://e.com/产品/✓"
    assert await counts(registry) == {ent.id: 3}
    assert not os.path.exists(path + ".idnode-progress")  # a finished import leaves no checkpoint


async def test_a_clean_import_leaves_no_rejects_file(node, tmp_path):
    registry, ent = node
    path = write_ndjson(tmp_path / "clean.ndjson", [url_row(n) for n in range(5)])
    summary = await import_file(registry, node_admin(), path, prefix=ent.prefix, fmt="ndjson", chunk=2)
    assert (summary.rows, summary.created, summary.failed, summary.rejects_file) == (5, 5, 0, None)
    assert not os.path.exists(path + ".rejects.ndjson")


async def test_rows_under_another_prefix_are_rejected(node, tmp_path):
    """``--to P`` registers under P: a row naming a handle of another enterprise or of the node is
    rejected, not written there (it would count for the other enterprise)."""
    registry, ent = node
    other = await onboard(registry, 2)
    rows = [
        url_row(1),
        {"handle": f"{other.prefix}/stray", "values": [{"index": 1, "type": "URL", "data": "https://x"}]},
        {"handle": f"{NODE}/stray", "values": [{"index": 1, "type": "URL", "data": "https://x"}]},
        {"handle": f"{ent.prefix.lower()}/fine", "values": [{"index": 1, "type": "URL", "data": "https://x"}]},
    ]
    path = write_ndjson(tmp_path / "mixed.ndjson", rows)
    summary = await import_file(registry, node_admin(), path, prefix=ent.prefix, fmt="ndjson")
    assert (summary.created, summary.failed) == (2, 2), summary
    assert sorted(r["line"] for r in rejects_of(path)) == [2, 3]
    assert await handles_under(registry, other.prefix) == []
    assert await counts(registry) == {ent.id: 2}


async def test_imported_handles_are_administered_by_the_enterprise(store_url, tmp_path, monkeypatch):
    """After an import by the node administrator (the CLI), the enterprise changes its own
    identifiers through the API, as it could had it registered them itself."""
    from aiohttp.test_utils import TestClient, TestServer

    from resolver.config import load_config
    from resolver.http.app import create_app
    from resolver.http.keys import STATE_KEY
    from tests.resolver.conftest import NODE_ADMIN, basic

    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    config = load_config(env={}, overrides={"data_dir": str(tmp_path), "store": store_url, "native_port": 0})
    async with TestClient(TestServer(create_app(config))) as client:
        admin = basic(NODE_ADMIN, ADMIN_SECRET)
        r = await client.post("/api/promoters", json={"name": "P", "uscc": make_uscc(1, "92")}, headers=admin)
        r = await client.post(
            "/api/enterprises",
            json={"name": "E", "uscc": make_uscc(1), "promoter": (await r.json())["id"]},
            headers=admin,
        )
        ent = await r.json()
        registry = client.app[STATE_KEY].registry
        path = write_ndjson(tmp_path / "x.ndjson", [url_row(1)])
        summary = await import_file(registry, node_admin(), path, prefix=ent["prefix"], fmt="ndjson")
        assert summary.created == 1
        headers = basic(ent["admin"], ent["secret"])
        body = {"values": [{"index": 1, "type": "URL", "data": "https://e.com/changed"}]}
        r = await client.put(f"/api/handles/{ent['prefix']}/SKU-00001", json=body, headers=headers)
        assert r.status == 200, await r.text()
        r = await client.delete(f"/api/handles/{ent['prefix']}/SKU-00001", headers=headers)
        assert r.status == 200, await r.text()


async def test_resume_after_an_interruption(node, tmp_path):
    """A chunk is ``chunk`` rows of the file, rejected ones included: the checkpoint is a line."""
    registry, ent = node
    rows: list[Any] = [url_row(n) for n in range(25)]
    rows[14] = "not json"  # a rejected row in the second chunk
    path = write_ndjson(tmp_path / "big.ndjson", rows)
    caller = node_admin()
    with pytest.raises(KeyboardInterrupt):
        await import_file(
            registry, caller, path, prefix=ent.prefix, fmt="ndjson", chunk=10, seconds=3600, progress=Interrupt(2)
        )
    assert os.path.exists(path + ".idnode-progress")
    assert await counts(registry) == {ent.id: 19}

    summary = await import_file(registry, caller, path, prefix=ent.prefix, fmt="ndjson", chunk=10, seconds=3600)
    assert summary.resumed_from_line == 20  # 19 items and the bad line
    assert (summary.rows, summary.created, summary.already_present, summary.failed) == (25, 24, 0, 1)
    assert len(await handles_under(registry, ent.prefix)) == 24
    assert await counts(registry) == {ent.id: 24}
    assert [r["line"] for r in rejects_of(path)] == [15]


async def test_resume_when_the_checkpoint_was_not_saved(node, tmp_path, monkeypatch):
    """Interrupted after a chunk was committed but before its checkpoint: the rerun finds those rows
    present and counts nothing twice; the rejects file holds every rejected row once."""
    import registry.importer as importer

    registry, ent = node
    rows: list[Any] = [url_row(n) for n in range(30)]
    rows[3] = "bad"
    rows[13] = "bad"
    path = write_ndjson(tmp_path / "x.ndjson", rows)
    real_replace = os.replace
    calls = {"n": 0}

    def flaky_replace(src: str, dst: str) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second chunk's checkpoint
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(importer.os, "replace", flaky_replace)
    with pytest.raises(KeyboardInterrupt):
        await import_file(registry, node_admin(), path, prefix=ent.prefix, fmt="ndjson", chunk=10, seconds=3600)
    monkeypatch.setattr(importer.os, "replace", real_replace)
    assert await counts(registry) == {ent.id: 18}

    summary = await import_file(registry, node_admin(), path, prefix=ent.prefix, fmt="ndjson", chunk=10, seconds=3600)
    assert summary.resumed_from_line == 10
    assert (summary.created, summary.already_present, summary.failed) == (19, 9, 2), summary
    assert await counts(registry) == {ent.id: 28}
    assert len(await handles_under(registry, ent.prefix)) == 28
    assert sorted(r["line"] for r in rejects_of(path)) == [4, 14]


async def test_a_changed_file_starts_over(node, tmp_path):
    registry, ent = node
    path = write_ndjson(tmp_path / "x.ndjson", [url_row(n) for n in range(20)])
    with pytest.raises(KeyboardInterrupt):
        await import_file(registry, node_admin(), path, prefix=ent.prefix, fmt="ndjson", chunk=5, progress=Interrupt())
    write_ndjson(tmp_path / "x.ndjson", [url_row(n) for n in range(22)])
    summary = await import_file(registry, node_admin(), path, prefix=ent.prefix, fmt="ndjson", chunk=5)
    assert (summary.resumed_from_line, summary.created, summary.already_present) == (0, 17, 5)
    assert await counts(registry) == {ent.id: 22}


async def test_restart_and_overwrite(node, tmp_path):
    registry, ent = node
    path = write_ndjson(tmp_path / "x.ndjson", [url_row(n) for n in range(12)])
    with pytest.raises(KeyboardInterrupt):
        await import_file(registry, node_admin(), path, prefix=ent.prefix, fmt="ndjson", chunk=5, progress=Interrupt())
    summary = await import_file(registry, node_admin(), path, prefix=ent.prefix, fmt="ndjson", chunk=5, resume=False)
    assert (summary.resumed_from_line, summary.rows, summary.created, summary.already_present) == (0, 12, 7, 5)
    assert await counts(registry) == {ent.id: 12}

    changed = [url_row(n, values=[{"index": 1, "type": "URL", "data": f"https://new/{n}"}]) for n in range(12)]
    write_ndjson(tmp_path / "x.ndjson", changed)
    summary = await import_file(registry, node_admin(), path, prefix=ent.prefix, fmt="ndjson", overwrite=True)
    assert (summary.created, summary.replaced, summary.already_present) == (0, 12, 0)
    record = await registry.read_record(parse_handle(f"{ent.prefix}/SKU-00007").key)
    assert record is not None and record.value_at(1).data == b"https://new/7"
    assert sum(v.type == "HS_ADMIN" for v in record.values) == 1  # its administrators were kept
    assert await counts(registry) == {ent.id: 12}


# -- the CLI ---------------------------------------------------------------------------------------
def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def cli_node(store_url: str) -> tuple[str, dict[str, Any]]:
    """A store with the node, a promoter and an enterprise, onboarded through the CLI."""
    run(store_url, lambda r: r.bootstrap(ADMIN_SECRET, None))
    r = cli("promoter", "add", "--store", store_url, "--name", "推广单位", "--uscc", make_uscc(1, "92"), "--json")
    assert r.exit_code == 0, r.output
    promoter = json.loads(r.output)["id"]
    r = cli(
        "enterprise",
        "add",
        "--store",
        store_url,
        "--name",
        "应用企业",
        "--uscc",
        make_uscc(1),
        "--promoter",
        str(promoter),
        "--json",
    )
    assert r.exit_code == 0, r.output
    return store_url, json.loads(r.output)


def test_cli_csv_with_template_columns_and_url(cli_node, tmp_path):
    url, ent = cli_node
    p = ent["prefix"]
    run(url, lambda r: r.put_template(node_admin(), "sku", {"fields": FIELDS}, None, new=True))
    path = write_csv(
        tmp_path / "产品.csv",
        ["suffix", "URL", "model", "batch"],
        [
            ["A-1", "https://e.com/1", "M100", "B0001"],
            ["A-2", "https://e.com/2", "M200", ""],  # optional field left empty
            ["A-3", "https://e.com/3", "", "B0003"],  # required field missing
            ["A-4", "https://e.com/4", "M400", "X"],  # pattern
            ["A-5", "https://e.com/5", "M500"],  # a column short
            ["A-6", "https://e.com/6", "型号六", "B0006"],
        ],
    )
    r = cli("import", path, "--store", url, "--enterprise-prefix", p, "--template", "sku@1", "--chunk", "2")
    assert r.exit_code == 3, r.output  # some rows were rejected (EXIT_REJECTED)
    assert "rows 6: created 3, replaced 0, already present 0, failed 3" in r.output
    assert f"rejected rows: {path}.rejects.ndjson" in r.output
    rejects = {x["line"]: x for x in rejects_of(path)}
    assert sorted(rejects) == [4, 5, 6]
    assert rejects[4]["responseCode"] == 202 and "model" in rejects[4]["message"]
    assert rejects[5]["responseCode"] == 202 and "batch" in rejects[5]["message"]
    assert rejects[6]["responseCode"] == 4 and "columns" in rejects[6]["message"]

    async def check(registry: Registry) -> None:
        record = await registry.read_record(parse_handle(f"{p}/A-6").key)
        assert record is not None
        by_index = {v.index: v for v in record.values}
        assert (by_index[1].type, by_index[1].data) == ("URL", b"https://e.com/6")
        assert (by_index[1001].type, by_index[1001].data) == ("TEMPLATE", b"sku@1")
        assert (by_index[2001].type, by_index[2001].data.decode()) == ("MODEL", "型号六")
        admin = valuedata.decode_admin(by_index[100].data)
        assert admin.handle == f"0.NA/{p}"  # administered by the enterprise
        two = await registry.read_record(parse_handle(f"{p}/A-2").key)
        assert two is not None and two.value_at(2002) is None
        assert await counts(registry) == {ent["id"]: 3}

    run(url, check)


def test_cli_csv_without_template(cli_node, tmp_path):
    """A column that is neither URL nor a template field is refused, unless --column maps it."""
    url, ent = cli_node
    path = write_csv(tmp_path / "plain.csv", ["suffix", "url", "COLOUR"], [["c-1", "https://e.com/c", "red"]])
    r = CliRunner().invoke(main, ["import", path, "--store", url, "--enterprise-prefix", ent["prefix"]])
    assert r.exit_code == EXIT_FAILED, r.output
    assert "column 'COLOUR' is not known: map it with --column COLOUR=TYPE[@INDEX]" in r.output
    assert run(url, counts) == {}
    r = cli("import", path, "--store", url, "--enterprise-prefix", ent["prefix"], "--column", "COLOUR=COLOUR")
    assert r.exit_code == 0, r.output
    assert "created 1" in r.output

    async def check(registry: Registry) -> None:
        record = await registry.read_record(parse_handle(f"{ent['prefix']}/c-1").key)
        assert record is not None
        assert (record.value_at(1).type, record.value_at(2).type, record.value_at(2).data) == ("URL", "COLOUR", b"red")

    run(url, check)


@pytest.mark.parametrize(
    ("header", "args", "words"),
    [
        (["suffix", "URL", "colour"], ["--template", "sku@1"], "not a field of template"),
        (["id", "URL"], [], "suffix"),
        (["suffix", "URL"], ["--template", "sku@9"], "no template sku@9"),
        (["suffix", "URL"], ["--template", "sku"], "ID@VERSION"),
        (["suffix", "URL"], ["--chunk", "0"], "--chunk"),
    ],
)
def test_cli_refuses_bad_files_and_options(cli_node, tmp_path, header, args, words):
    url, ent = cli_node
    run(url, lambda r: r.put_template(node_admin(), "sku", {"fields": FIELDS}, None, new=True))
    path = write_csv(tmp_path / "bad.csv", header, [["x"] * len(header)])
    r = CliRunner().invoke(main, ["import", path, "--store", url, "--enterprise-prefix", ent["prefix"], *args])
    assert r.exit_code != 0
    assert words in r.output
    assert run(url, lambda reg: counts(reg)) == {}


def test_cli_ndjson_interrupted_then_resumed_then_restarted(cli_node, tmp_path, monkeypatch):
    url, ent = cli_node
    path = write_ndjson(tmp_path / "items.ndjson", [url_row(n) for n in range(23)])
    real_update = click._termui_impl.ProgressBar.update
    calls = {"n": 0}

    def interrupting_update(self: Any, n_steps: int, current_item: Any = None) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        real_update(self, n_steps, current_item)

    monkeypatch.setattr(click._termui_impl.ProgressBar, "update", interrupting_update)
    r = CliRunner().invoke(
        main, ["import", path, "--store", url, "--enterprise-prefix", ent["prefix"], "--chunk", "10"]
    )
    assert r.exit_code != 0
    assert run(url, counts) == {ent["id"]: 10}

    r = cli("import", path, "--store", url, "--enterprise-prefix", ent["prefix"], "--chunk", "10")
    assert r.exit_code == 0, r.output
    assert "resumed after line 10" in r.output
    assert "rows 23: created 23" in r.output
    assert run(url, counts) == {ent["id"]: 23}

    r = cli("import", path, "--store", url, "--enterprise-prefix", ent["prefix"], "--chunk", "10", "--restart")
    assert r.exit_code == 0, r.output
    assert "rows 23: created 0, replaced 0, already present 23, failed 0" in r.output
    assert run(url, counts) == {ent["id"]: 23}

    write_ndjson(
        tmp_path / "items.ndjson",
        [url_row(n, values=[{"index": 1, "type": "URL", "data": "https://v2"}]) for n in range(23)],
    )
    r = cli("import", path, "--store", url, "--enterprise-prefix", ent["prefix"], "--overwrite")
    assert r.exit_code == 0, r.output
    assert "created 0, replaced 23" in r.output
    assert run(url, counts) == {ent["id"]: 23}


def test_cli_import_of_the_same_file_twice(cli_node, tmp_path):
    url, ent = cli_node
    path = write_ndjson(tmp_path / "twice.ndjson", [url_row(n) for n in range(7)])
    assert cli("import", path, "--store", url, "--enterprise-prefix", ent["prefix"]).exit_code == 0
    r = cli("import", path, "--store", url, "--enterprise-prefix", ent["prefix"])
    assert r.exit_code == 0 and "already present 7" in r.output, r.output
    assert run(url, counts) == {ent["id"]: 7}


def test_cli_import_still_takes_the_enterprise_prefix_as_prefix_for_one_release(cli_node, tmp_path):
    """The spelling before --enterprise-prefix works, with a warning; given both, --prefix is the node's."""
    url, ent = cli_node
    path = write_ndjson(tmp_path / "p.ndjson", [url_row(1)])
    r = CliRunner().invoke(main, ["import", path, "--store", url, "--prefix", ent["prefix"]])
    assert r.exit_code == 0, r.output
    assert "--prefix names the node prefix, as in every other command" in r.stderr
    assert run(url, counts) == {ent["id"]: 1}
    path = write_ndjson(tmp_path / "q.ndjson", [url_row(2)])
    args = ["import", path, "--store", url, "--prefix", "88.118.8", "--enterprise-prefix", ent["prefix"]]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "deprecated" not in r.stderr, r.output
    assert run(url, counts) == {ent["id"]: 2}


def test_cli_import_applies_the_nodes_value_limits(cli_node, tmp_path):
    url, ent = cli_node
    row = {"suffix": "big", "values": [{"index": 1, "type": "URL", "data": "https://e.com/" + "x" * 200}]}
    path = write_ndjson(tmp_path / "limits.ndjson", [row])
    r = CliRunner().invoke(
        main,
        ["import", path, "--store", url, "--enterprise-prefix", ent["prefix"]],
        env={"IDNODE_MAX_VALUE_BYTES": "100"},
    )
    assert "failed 1" in r.output, r.output
    assert run(url, counts) == {}


async def test_lines_json_will_not_convert_are_rejected_not_fatal(node, tmp_path):
    """A 5,000-digit number, an unpaired surrogate or Unicode digits fail their line only."""
    registry, ent = node
    rows = [
        url_row(1),
        '{"suffix": "big", "values": [{"index": ' + "7" * 5000 + ', "type": "URL", "data": "x"}]}',
        '{"suffix": "sur", "values": [{"index": 1, "type": "URL", "data": "\\ud800"}]}',
        url_row(2, values=[{"index": "²", "type": "URL", "data": "x"}]),
        url_row(3),
    ]
    path = write_ndjson(tmp_path / "odd.ndjson", rows)
    summary = await import_file(registry, node_admin(), path, prefix=ent.prefix, fmt="ndjson")
    assert (summary.rows, summary.created, summary.failed) == (5, 2, 3), summary
    messages = [r["message"] for r in rejects_of(path)]
    assert any("4300 digits" in m for m in messages) and any("surrogate" in m for m in messages)
    assert sorted(await handles_under(registry, ent.prefix)) == [f"{ent.prefix}/SKU-00001", f"{ent.prefix}/SKU-00003"]


async def test_a_replace_that_races_another_writer_writes_again(node, tmp_path, monkeypatch):
    """A replace job plans a row as a creation; before it writes, another writer creates that handle
    (or changes it). The row is planned and written again, not rejected as "already exists"."""
    from registry.model import HandleValue

    registry, ent = node
    path = write_ndjson(tmp_path / "r.ndjson", [url_row(n) for n in range(6)])
    apply = registry.writes.apply
    raced: list[str] = []

    async def racing_apply(plan):  # type: ignore[no-untyped-def]
        if not raced:  # the first chunk: another writer gets there first, for two of its rows
            for n in (1, 4):
                name = registry.parse(f"{ent.prefix}/SKU-{n:05d}")
                await registry.put_handle(node_admin(), name, [HandleValue(1, "URL", b"https://other/")])
                raced.append(name.text)
        return await apply(plan)

    monkeypatch.setattr(registry.writes, "apply", racing_apply)
    summary = await import_file(registry, node_admin(), path, prefix=ent.prefix, fmt="ndjson", overwrite=True)
    assert len(raced) == 2
    assert (summary.created, summary.replaced, summary.failed) == (4, 2, 0), summary.failures
    for n in range(6):
        record = await registry.read_record(parse_handle(f"{ent.prefix}/SKU-{n:05d}").key)
        assert record is not None and record.value_at(1).data == f"https://e.com/{n}".encode()
    assert not os.path.exists(path + ".rejects.ndjson")
