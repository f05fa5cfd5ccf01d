"""What ``idnode serve`` prints once ready: a few lines an operator needs, the secret only once."""

from __future__ import annotations

import re

from click.testing import CliRunner

from resolver.cli import main
from resolver.config import load_config
from resolver.ops.banner import StartupFacts, banner
from tests.nodeproc import NodeProcess
from tests.resolver.conftest import NODE_ADMIN, basic
from tests.resolver.test_shared_cache import call

ENCODED = "300%3A0.NA%2F88.118.8"


def lines_of(node: NodeProcess) -> list[str]:
    """The node's standard output (the banner), without the JSON log lines of standard error."""
    return [line for line in node.log().splitlines() if not line.startswith("{")]


def test_first_start_prints_a_short_banner_with_the_secret_once_and_it_works(tmp_path):
    data = tmp_path / "data"
    node = NodeProcess(data, env={"IDNODE_ADMIN_SECRET": ""}).wait_ready()  # no secret given: one is generated
    try:
        printed = lines_of(node)
        assert len(printed) <= 10, printed
        text = "\n".join(printed)
        assert f"HTTP     {node.url}" in text and f"curl {node.url}/api/handles/0.NA/88.118.8" in text
        assert "native   off (native_port 0)" in text
        assert f"data     SQLite {data / 'idnode.db'}" in text
        assert f"admin    {NODE_ADMIN}" in text and ENCODED in text
        assert f"kill -TERM {node.proc.pid}" in text
        secret = re.search(r"secret   (\S+)", text).group(1)  # type: ignore[union-attr]
        assert node.log().count(secret) == 1  # printed once, never logged
        assert call(f"{node.url}/api/auditors", headers=basic(NODE_ADMIN, secret))[0] == 200  # sent as ENCODED
    finally:
        node.stop()
    again = NodeProcess(data, env={"IDNODE_ADMIN_SECRET": ""}).wait_ready()
    try:
        text = "\n".join(lines_of(again))
        assert secret not in again.log() and "not shown: only its hash is stored" in text
        assert "idnode admin reset-secret" in text
    finally:
        again.stop()


def test_several_workers_print_one_banner(tmp_path):
    node = NodeProcess(tmp_path / "data", "--workers", "2").wait_ready()
    try:
        text = "\n".join(lines_of(node))
    finally:
        node.stop()
    assert text.count("serving node prefix") == 1 and "2 workers" in text


def test_banner_says_what_a_setting_changes():
    facts = StartupFacts(native_bound=False)
    config = load_config(
        env={},
        overrides={"host": "0.0.0.0", "store": "postgresql://idnode:s3cret@db.internal:5432/idnode", "prefix": "86.1"},
    )
    text = banner(config, facts, pid=42)
    assert "s3cret" not in text and "postgresql://idnode@db.internal:5432/idnode (password not shown)" in text
    assert "port 2641 could not be bound" in text and "HS_SITE advertises 127.0.0.1: set advertise_host" in text
    assert "300:0.NA/86.1" in text and "300%3A0.NA%2F86.1" in text
    config = load_config(env={}, overrides={"advertise_host": "203.0.113.10", "tls_cert": "c", "tls_key": "k"})
    text = banner(config, StartupFacts(native_bound=True), pid=42)
    assert "https://127.0.0.1:8000" in text and "advertises 203.0.113.10" in text
    assert "UDP and TCP 127.0.0.1:2641" in text


def test_a_first_start_through_get_still_shows_the_secret(tmp_path):
    r = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "--get", "/healthz"], env={"IDNODE_ADMIN_SECRET": ""})
    assert r.exit_code == 0, r.output
    assert re.search(r"secret   \S+\n\s+new key of 300:0.NA/88.118.8: shown this once", r.stderr)
    r = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "--get", "/healthz"], env={"IDNODE_ADMIN_SECRET": ""})
    assert "secret" not in r.stderr
