"""The ``idnode`` command line as an operator meets it: one meaning per flag, the same settings for
every command, distinct exit codes, templates, the audit log and the admin secret reset."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from registry.errors import InvalidCredential
from registry.service import Registry
from registry.stores import open_store, sqlite
from resolver.cli import main
from resolver.cli.common import CACHE, EXIT_FAILED, EXIT_REJECTED, EXIT_UNREACHABLE, EXIT_USAGE
from tests.conftest import ADMIN_SECRET, REDIS_URL, free_port
from tests.nodeproc import NodeProcess
from tests.resolver.conftest import NODE_ADMIN, basic, make_uscc
from tests.resolver.test_shared_cache import ADMIN, call, cli

# Commands that change the store: each takes the store and the shared-cache settings serve takes.
WRITERS = [
    ("promoter", "add"),
    ("enterprise", "add"),
    ("enterprise", "move"),
    ("enterprise", "disable"),
    ("enterprise", "enable"),
    ("auditor", "add"),
    ("auditor", "revoke"),
    ("template", "create"),
    ("template", "add-version"),
    ("import",),
    ("admin", "reset-secret"),
]


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, input=input)


def commands(group: click.Group = main, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


def flags(command: click.Command) -> dict[str, click.Parameter]:
    return {opt: p for p in command.params for opt in p.opts}


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A SQLite store with the node's prefix handle, made as a first start makes it."""
    data = tmp_path / "data"
    r = run("serve", "--data-dir", str(data), "--get", "/healthz", env={"IDNODE_ADMIN_SECRET": ADMIN_SECRET})
    assert r.exit_code == 0, r.output
    return f"sqlite:///{data}/idnode.db"


def test_every_command_has_help_and_the_top_level_lists_the_exit_codes():
    top = run("--help")
    assert top.exit_code == 0
    for code, meaning in (
        (0, "done"),
        (1, "refused"),
        (2, "usage error"),
        (3, "rows were rejected"),
        (4, "cannot be reached"),
    ):
        assert f"{code}  " in top.output and meaning in top.output
    for path, _ in commands():
        r = run(*path, "--help")
        assert r.exit_code == 0, (path, r.output)
        assert "Usage:" in r.output and "\n  " in r.output, path


def test_one_meaning_per_flag_across_commands():
    """--prefix is the node prefix wherever it appears (same help as serve); every writer takes the
    store and cache settings serve takes; readers take the store settings."""
    serve = flags(main.commands["serve"])
    found = dict(commands())
    for path, command in found.items():
        if isinstance(command, click.Group) or path == ("serve",):
            continue
        mine = flags(command)
        assert "--version" not in mine, path  # idnode --version: the program's; a template's is ID@VERSION
        for flag, param in mine.items():
            if flag in serve:
                assert param.help == serve[flag].help, (path, flag)
        if any(isinstance(p, click.Option) and "--config" in p.opts for p in command.params):
            assert {"--store", "--data-dir", "--prefix", "--config"} <= set(mine), path
    for path in WRITERS:
        mine = flags(found[path])
        wanted = {"--config", "--store", "--data-dir", "--prefix"} | {"--" + n.replace("_", "-") for n in CACHE}
        assert wanted <= set(mine), (path, wanted - set(mine))
    hidden = {o for p in found[("import",)].params if getattr(p, "hidden", False) for o in p.opts}
    assert hidden == {"--to", "--node-prefix"}  # the spellings of 0.1.0, kept for one release (with a warning)


def test_usage_errors_exit_2():
    for args in (["promoter", "add", "--nme", "x"], ["nonsense"], ["tally", "show", "--from", "2025-13-01"]):
        r = run(*args)
        assert r.exit_code == EXIT_USAGE, (args, r.output)
    r = run("promoter", "list", env={"IDNODE_PORT": "not-a-number"})
    assert r.exit_code == EXIT_USAGE and "port: expected an integer" in r.output


def test_refusals_exit_1(store):
    args = ["promoter", "add", "--store", store, "--name", "P", "--uscc", make_uscc(1, "92")]
    assert run(*args).exit_code == 0
    again = run(*args)
    assert again.exit_code == EXIT_FAILED and "already exists" in again.output
    r = run("enterprise", "move", "88.118.8.9999", "--promoter", "1", "--store", store)
    assert r.exit_code == EXIT_FAILED, r.output


def test_an_unreachable_store_or_cache_exits_4_and_writes_nothing(store, tmp_path):
    dead = free_port()
    r = run("promoter", "list", "--store", f"postgresql://postgres@127.0.0.1:{dead}/idnode")
    assert r.exit_code == EXIT_UNREACHABLE and "unavailable" in r.output
    add = ["promoter", "add", "--store", store, "--name", "P", "--uscc", make_uscc(2, "92")]
    r = run(*add, "--redis", f"redis://127.0.0.1:{dead}/0")
    assert r.exit_code == EXIT_UNREACHABLE and "Nothing was written" in r.output
    r = run(*add, env={"IDNODE_REDIS": f"redis://127.0.0.1:{dead}/0"})  # the same setting, as serve reads it
    assert r.exit_code == EXIT_UNREACHABLE and "Nothing was written" in r.output
    listed = run("promoter", "list", "--store", store, "--json")
    assert json.loads(listed.output) == []
    with sqlite3.connect(store.removeprefix("sqlite:///")) as conn:
        conn.execute(f"PRAGMA user_version = {sqlite.SCHEMA_VERSION + 1}")
    for args in (["promoter", "list", "--store", store], ["serve", "--store", store, "--port", str(dead)]):
        r = run(*args)
        assert r.exit_code == EXIT_UNREACHABLE, r.output
        assert "newer than this idnode knows" in r.output


def test_settings_come_from_the_config_file_and_the_environment_as_for_serve(store, tmp_path):
    conf = tmp_path / "idnode.toml"
    conf.write_text(f'[idnode]\nstore = "{store}"\n', encoding="utf-8")
    r = run("promoter", "add", "--config", str(conf), "--name", "From file", "--uscc", make_uscc(3, "92"))
    assert r.exit_code == 0, r.output
    r = run("promoter", "list", "--json", env={"IDNODE_STORE": store})
    assert [p["name"] for p in json.loads(r.output)] == ["From file"]


def test_imports_with_rejected_rows_exit_3(store, tmp_path):
    r = run("promoter", "add", "--store", store, "--name", "P", "--uscc", make_uscc(4, "92"))
    r = run("enterprise", "add", "--store", store, "--name", "E", "--uscc", make_uscc(4), "--promoter", "1", "--json")
    prefix = json.loads(r.output)["prefix"]
    rows = tmp_path / "rows.ndjson"
    rows.write_text(
        json.dumps({"suffix": "ok", "values": [{"index": 1, "type": "URL", "data": "https://e.com/1"}]})
        + "\n"
        + json.dumps({"suffix": "bad", "values": [{"index": "x", "type": "URL", "data": "u"}]})
        + "\n",
        encoding="utf-8",
    )
    r = run("import", str(rows), "--store", store, "--enterprise-prefix", prefix)
    assert r.exit_code == EXIT_REJECTED, r.output
    assert "created 1" in r.output and "failed 1" in r.output
    r = run("import", str(rows), "--store", store)
    assert r.exit_code == EXIT_USAGE and "--enterprise-prefix" in r.output


def test_tally_has_one_shape_and_the_old_one_still_works_for_a_release(store):
    r = run("tally", "show", "--store", store, "--from", "2025-01-01", "--to", "2026-01-01")
    assert r.exit_code == 0 and "period [2025-01-01, 2026-01-01)" in r.stdout, r.output
    old = run("tally", "--store", store, "--from", "2025-01-01", "--to", "2026-01-01")
    assert old.exit_code == 0 and old.stdout == r.stdout
    assert "`idnode tally [OPTIONS]` is deprecated" in old.stderr and "idnode tally show" in old.stderr
    bare = run("tally", env={"IDNODE_STORE": store})  # 0.1.0: the tally of the default period
    assert bare.exit_code == 0 and "period [" in bare.stdout and "deprecated" in bare.stderr
    assert "Commands:" in run("tally", "--help").output
    policy = Path(store.removeprefix("sqlite:///")).parent / "policy.json"
    policy.write_text(json.dumps({"mode": "pooled"}), encoding="utf-8")
    r = run("tally", "show", "--store", store, "--policy", str(policy))
    assert r.exit_code == 0 and "reading pooled" in r.stdout and "use --policy-file" in r.stderr


TEMPLATE = {
    "id": "sku-basic",
    "description": "SKU",
    "fields": [{"index": 2001, "name": "batch", "type": "BATCH_NO", "required": True, "pattern": "[0-9]{8}"}],
}


def test_templates_list_show_create_and_add_versions(store, tmp_path):
    first = tmp_path / "t1.json"
    first.write_text(json.dumps(TEMPLATE), encoding="utf-8")
    r = run("template", "create", str(first), "--store", store)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["version"] == 1
    assert run("template", "create", str(first), "--store", store).exit_code == EXIT_FAILED  # exists

    dropped = tmp_path / "t2-bad.json"
    dropped.write_text(json.dumps({"fields": [{"index": 2002, "name": "color", "type": "COLOR"}]}), encoding="utf-8")
    r = run("template", "add-version", "sku-basic", str(dropped), "--store", store)
    assert r.exit_code == EXIT_FAILED and "fields can be disabled but not deleted" in r.output
    second = tmp_path / "t2.json"
    fields = [*TEMPLATE["fields"], {"index": 2002, "name": "color", "type": "COLOR", "enum": ["red"]}]
    second.write_text(json.dumps({"fields": fields}), encoding="utf-8")
    r = run("template", "add-version", "sku-basic", str(second), "--store", store)
    assert r.exit_code == 0 and json.loads(r.output)["version"] == 2, r.output

    shown = json.loads(run("template", "show", "sku-basic", "--store", store).output)
    assert shown["version"] == 2 and [f["name"] for f in shown["fields"]] == ["batch", "color"]
    v1 = json.loads(run("template", "show", "sku-basic@1", "--store", store).output)
    assert [f["name"] for f in v1["fields"]] == ["batch"]
    r = run("template", "show", "nope", "--store", store)
    assert r.exit_code == EXIT_FAILED and "no template nope" in r.output
    assert run("template", "show", "sku-basic@3", "--store", store).exit_code == EXIT_FAILED
    assert run("template", "show", "sku-basic@x", "--store", store).exit_code == EXIT_USAGE
    listed = json.loads(run("template", "list", "--store", store, "--json").output)
    assert [(t["id"], t["version"], t["scope"]) for t in listed] == [("sku-basic", 1, "node"), ("sku-basic", 2, "node")]
    plain = run("template", "list", "--store", store).output
    assert "id=sku-basic  version=2  scope=node  fields=2" in plain

    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    r = run("template", "create", str(broken), "--store", store)
    assert r.exit_code == EXIT_USAGE and "malformed JSON" in r.output


def test_an_enterprise_template_from_the_cli(store, tmp_path):
    run("promoter", "add", "--store", store, "--name", "P", "--uscc", make_uscc(5, "92"))
    r = run("enterprise", "add", "--store", store, "--name", "E", "--uscc", make_uscc(5), "--promoter", "1", "--json")
    prefix = json.loads(r.output)["prefix"]
    body = tmp_path / "own.json"
    body.write_text(json.dumps(TEMPLATE), encoding="utf-8")
    r = run("template", "create", str(body), "--enterprise-prefix", prefix, "--store", store)
    assert r.exit_code == 0 and json.loads(r.output)["scope"] == prefix, r.output
    assert run("template", "show", "sku-basic", "--store", store).exit_code == EXIT_FAILED  # not node-wide
    r = run("template", "show", "sku-basic", "--enterprise-prefix", prefix, "--store", store)
    assert json.loads(r.output)["scope"] == prefix
    listed = run("template", "list", "--enterprise-prefix", "88.118.8.4040", "--store", store, "--json")
    assert json.loads(listed.output) == []
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps({**TEMPLATE, "prefix": "88.118.8.4040"}), encoding="utf-8")
    r = run("template", "create", str(clash), "--enterprise-prefix", prefix, "--store", store)
    assert r.exit_code == EXIT_USAGE and "differ" in r.output


async def _authenticates(store: str, secret: str) -> bool:
    s = await open_store(store)
    registry = Registry(s)
    try:
        await registry.authenticator.authenticate(NODE_ADMIN, secret)
        return True
    except InvalidCredential:
        return False
    finally:
        registry.close()
        await s.close()


def test_reset_secret_asks_replaces_the_key_and_is_audited(store):
    r = run("admin", "reset-secret", "--store", store, input="n\n")
    assert r.exit_code == EXIT_FAILED and "Aborted" in r.output
    assert asyncio.run(_authenticates(store, ADMIN_SECRET))
    r = run("admin", "reset-secret", "--store", store, input="y\n")
    assert r.exit_code == 0, r.output
    secret = next(line.split()[1] for line in r.stdout.splitlines() if line.startswith("secret "))
    assert "300%3A0.NA%2F88.118.8" in r.stdout and r.stdout.count(secret) == 1
    assert asyncio.run(_authenticates(store, secret))
    assert not asyncio.run(_authenticates(store, ADMIN_SECRET))

    listed = run("audit", "list", "--store", store, "--json")
    (entry,) = json.loads(listed.output)
    assert entry["action"] == "admin.reset-secret" and entry["target"] == "0.NA/88.118.8"
    assert entry["actor"] == NODE_ADMIN and entry["source"].startswith("idnode CLI, ")
    assert secret not in listed.output
    plain = run("audit", "list", "--store", store).output
    assert "admin.reset-secret" in plain and "0.NA/88.118.8" in plain
    assert run("audit", "list", "--store", store, "--action", "store.backup").output.strip() == "no entries"
    assert run("audit", "list", "--store", store, "--actor", "300:0.NA/88.118.8.1001").output.strip() == "no entries"
    assert "admin.reset-secret" in run("audit", "list", "--store", store, "--actor", NODE_ADMIN).output
    assert run("audit", "list", "--store", store, "--since", "2025-02-30").exit_code == EXIT_USAGE


def test_reset_secret_on_a_store_no_node_has_started(tmp_path):
    r = run("admin", "reset-secret", "--yes", "--data-dir", str(tmp_path / "empty"))
    assert r.exit_code == EXIT_FAILED and "node prefix handle missing" in r.output


def test_reset_secret_reaches_a_running_node_through_the_shared_cache(tmp_path, redis_prefix):
    """The node remembers a checked secret for auth_cache_ttl and caches its prefix handle: the
    reset still takes effect on its next request, through the cache the node recorded in the store."""
    data = tmp_path / "data"
    node = NodeProcess(data, "--redis", REDIS_URL, "--redis-key-prefix", redis_prefix).wait_ready()
    try:
        for _ in range(2):
            assert call(f"{node.url}/api/auditors", headers=ADMIN)[0] == 200
        done = cli("admin", "reset-secret", "--yes", data=data)
        assert done.returncode == 0, done.stderr
        assert "announcing changes to the shared cache" in done.stderr
        secret = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("secret "))
        assert call(f"{node.url}/api/auditors", headers=ADMIN)[0] == 401
        assert call(f"{node.url}/api/auditors", headers=basic(NODE_ADMIN, secret))[0] == 200
    finally:
        node.stop()


def test_auditors_from_the_cli(store):
    r = run("auditor", "add", "--name", "baiyun", "--store", store)
    assert r.exit_code == 0 and "identity=300:88.118.8/auditor/baiyun" in r.output, r.output
    listed = json.loads(run("auditor", "list", "--store", store, "--json").output)
    assert [a["name"] for a in listed] == ["baiyun"]
    r = run("auditor", "revoke", "baiyun", "--store", store)
    assert r.exit_code == 0 and "revoked 300:88.118.8/auditor/baiyun" in r.output
    assert json.loads(run("auditor", "list", "--store", store, "--json").output) == []
    assert run("auditor", "revoke", "baiyun", "--store", store).exit_code == EXIT_FAILED
