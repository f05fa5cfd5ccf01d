"""``idnode backup`` and ``idnode restore``: a consistent copy of a node that keeps writing, put back
into a stopped node that then serves every write acknowledged before the copy; and the refusals."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from registry.stores import sqlite
from resolver.cli import main
from resolver.cli.common import EXIT_FAILED, EXIT_UNREACHABLE
from tests.conftest import ADMIN_SECRET
from tests.nodeproc import IDNODE, NodeProcess
from tests.resolver.test_shared_cache import call, enterprise

FIXTURES = Path(__file__).parent.parent / "fixtures"
WRITERS = 2
MAX_WRITES = 20_000  # per writer: the loop is bounded in count as well as stopped by the test


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def idnode(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDNODE_")} | {"IDNODE_DATA_DIR": str(data)}
    return subprocess.run([IDNODE, *args], capture_output=True, text=True, env=env, timeout=300)


class Writer(threading.Thread):
    """PUTs ``<prefix>/W<k>-<n>`` for n = 0, 1, … one at a time, recording when each was acknowledged."""

    def __init__(self, node: NodeProcess, prefix: str, headers: dict[str, str], k: int) -> None:
        super().__init__(daemon=True)
        self.node, self.prefix, self.headers, self.k = node, prefix, headers, k
        self.acked: list[float] = []  # acked[n]: monotonic time write n was answered 201
        self.stop = threading.Event()
        self.error: str | None = None

    def handle(self, n: int) -> str:
        return f"{self.prefix}/W{self.k}-{n}"

    def run(self) -> None:
        for n in range(MAX_WRITES):
            if self.stop.is_set():
                return
            values = [{"index": 1, "type": "URL", "data": f"https://trace.example.com/{self.k}/{n}"}]
            status, body = call(f"{self.node.url}/api/handles/{self.handle(n)}", "PUT", values, self.headers)
            if status != 201:
                self.error = f"write {n}: {status} {body}"
                return
            self.acked.append(time.monotonic())

    def acked_before(self, instant: float) -> int:
        return sum(1 for t in self.acked if t < instant)


def wait_for(condition, what: str, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_backup_under_write_load_restores_every_acknowledged_write(tmp_path):
    data = tmp_path / "data"
    node = NodeProcess(data).wait_ready()
    writers: list[Writer] = []
    try:
        ent = enterprise(node, 1)
        writers = [Writer(node, ent["prefix"], ent["headers"], k) for k in range(WRITERS)]
        for w in writers:
            w.start()
        wait_for(lambda: all(len(w.acked) >= 100 for w in writers), "writes before the backup")
        started = time.monotonic()
        before = [w.acked_before(started) for w in writers]
        made = idnode("backup", str(tmp_path / "backup.db"), data=data)  # a separate process, as an operator runs it
        finished = time.monotonic()
        assert made.returncode == 0, made.stderr
        wait_for(lambda: all(w.acked_before(finished) < len(w.acked) for w in writers), "writes after the backup")
        for w in writers:
            w.stop.set()
            w.join(60)
            assert w.error is None, w.error
        during = sum(w.acked_before(finished) - b for w, b in zip(writers, before, strict=True))
        assert during > 0, "no write was acknowledged while the backup ran"
        print(f"writes acknowledged: {before} before the backup, {during} while it ran")
    finally:
        for w in writers:
            w.stop.set()
        node.stop()

    backup = tmp_path / "backup.db"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert "backed up" in made.stdout and "report-signing key is in the store" in made.stdout
    with sqlite3.connect(backup) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        keys = {r[0] for r in conn.execute("SELECT hkey FROM handles WHERE hkey LIKE ?", (ent["prefix"] + "/W%",))}
        counted = conn.execute("SELECT SUM(delta) FROM registration_counts").fetchone()[0]
        rolled = conn.execute("SELECT SUM(delta) FROM registration_months").fetchone()[0]
    # One instant: each sequential writer's writes in the copy are exactly its first m, m >= what was
    # acknowledged before the backup began; and the counters agree with the identifiers they count.
    for w, b in zip(writers, before, strict=True):
        mine = {k for k in keys if k.startswith(f"{ent['prefix']}/W{w.k}-".upper())}
        assert mine == {w.handle(n).upper() for n in range(len(mine))} and len(mine) >= b, (w.k, len(mine), b)
    assert counted == rolled == len(keys)

    restored = tmp_path / "restored"
    done = idnode("restore", str(backup), data=restored)
    assert done.returncode == 0, done.stderr
    node = NodeProcess(restored).wait_ready()
    try:
        for w, b in zip(writers, before, strict=True):
            for n in range(b):
                status, body = call(f"{node.url}/api/handles/{w.handle(n)}")
                assert status == 200, (w.handle(n), body)
                assert body["values"][0]["data"]["value"] == f"https://trace.example.com/{w.k}/{n}"
    finally:
        node.stop()
    audit = json.loads(idnode("audit", "list", "--json", data=restored).stdout)
    # The onboarding before the backup is in it (recorded with the change); then the restore itself.
    assert [e["action"] for e in audit] == ["store.restore", "enterprise.add", "promoter.add"]
    assert json.loads(idnode("audit", "list", "--json", data=data).stdout)[0]["action"] == "store.backup"


@pytest.fixture
def stopped(tmp_path) -> Path:  # type: ignore[no-untyped-def]
    """The data directory of a node started once (its store holds the prefix handle)."""
    data = tmp_path / "data"
    r = run("serve", "--data-dir", str(data), "--get", "/healthz", env={"IDNODE_ADMIN_SECRET": ADMIN_SECRET})
    assert r.exit_code == 0, r.output
    return data


def test_restore_refuses_a_running_node_and_a_store_that_is_there(stopped, tmp_path):
    backup = tmp_path / "b.db"
    assert run("backup", str(backup), "--data-dir", str(stopped)).exit_code == 0
    node = NodeProcess(stopped).wait_ready()
    try:
        r = run("restore", str(backup), "--data-dir", str(stopped), "--force")
        assert r.exit_code == EXIT_UNREACHABLE and "running node" in r.output, r.output
    finally:
        node.stop()
    r = run("restore", str(backup), "--data-dir", str(stopped))
    assert r.exit_code == EXIT_FAILED and "already holds a store: --force replaces it" in r.output
    before = sorted(p.name for p in stopped.iterdir())
    r = run("restore", str(backup), "--data-dir", str(stopped), "--force")
    assert r.exit_code == 0, r.output
    (kept,) = [p for p in stopped.iterdir() if ".before-restore-" in p.name]
    assert f"kept as {kept}" in r.output and kept.name not in before
    with sqlite3.connect(kept) as conn:
        assert conn.execute("SELECT COUNT(*) FROM handles").fetchone()[0] >= 1


def test_restore_refuses_what_is_not_a_store_and_a_newer_schema(stopped, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    target = tmp_path / "fresh"
    r = run("restore", str(junk), "--data-dir", str(target))
    assert r.exit_code == EXIT_FAILED and "is not an idnode store" in r.output
    newer = tmp_path / "newer.db"
    assert run("backup", str(newer), "--data-dir", str(stopped)).exit_code == 0
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {sqlite.SCHEMA_VERSION + 1}")
    r = run("restore", str(newer), "--data-dir", str(target))
    assert r.exit_code == EXIT_UNREACHABLE and "newer than this idnode knows" in r.output
    assert not (target / "idnode.db").exists()


def test_a_backup_of_an_earlier_release_restores_and_is_upgraded(tmp_path):
    target = tmp_path / "data"
    r = run("restore", str(FIXTURES / "release-0.1.0.db"), "--data-dir", str(target))
    assert r.exit_code == 0, r.output
    assert "schema version 3" in r.output
    with sqlite3.connect(target / "idnode.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite.SCHEMA_VERSION
    audit = json.loads(run("audit", "list", "--json", "--data-dir", str(target)).output)
    assert [e["action"] for e in audit] == ["store.restore"]
    manifest = json.loads((FIXTURES / "release-0.1.0.json").read_text(encoding="utf-8"))
    assert audit[0]["detail"]["handles"] == len(manifest["handles"])


def test_backup_destinations(stopped, tmp_path):
    into = tmp_path / "backups"
    into.mkdir()
    r = run("backup", str(into), "--data-dir", str(stopped))
    assert r.exit_code == 0, r.output
    (made,) = into.iterdir()
    assert made.name.startswith("idnode-") and made.suffix == ".db"
    again = run("backup", str(made), "--data-dir", str(stopped))
    assert again.exit_code == EXIT_FAILED and "--force replaces it" in again.output
    assert run("backup", str(made), "--data-dir", str(stopped), "--force").exit_code == 0
    r = run("backup", str(tmp_path / "no" / "such" / "dir.db"), "--data-dir", str(stopped))
    assert r.exit_code == EXIT_FAILED and "no directory" in r.output
    r = run("backup", str(stopped / "idnode.db"), "--data-dir", str(stopped), "--force")
    assert r.exit_code == EXIT_FAILED and "must not overwrite the store itself" in r.output
    r = run("backup", str(tmp_path / "x.db"), "--data-dir", str(tmp_path / "nothing-here"))
    assert r.exit_code == EXIT_UNREACHABLE and "no SQLite store" in r.output


def test_the_report_key_file_is_named_as_what_to_keep(stopped, tmp_path):
    key = tmp_path / "report-key.pem"
    r = run("tally", "show", "--data-dir", str(stopped), "--format", "json", "--report-key-file", str(key))
    assert r.exit_code == 0 and key.exists(), r.output  # the key moves out of the store into the file
    r = run("backup", str(tmp_path / "b.db"), "--data-dir", str(stopped), "--report-key-file", str(key))
    assert r.exit_code == 0 and f"keep {key} with it" in r.output
    r = run("restore", str(tmp_path / "b.db"), "--data-dir", str(tmp_path / "elsewhere"))
    assert r.exit_code == 0
    assert "report-signing key (key id" in r.stderr and "put that file back" in r.stderr
    r = run("restore", str(tmp_path / "b.db"), "--data-dir", str(tmp_path / "again"), "--report-key-file", str(key))
    assert r.exit_code == 0 and "report-signing key" not in r.stderr


def test_postgresql_stores_are_pointed_to_pg_dump(pg_store_url, tmp_path):
    for args in (["backup", str(tmp_path / "b.db")], ["restore", str(FIXTURES / "release-0.1.0.db")]):
        r = run(*args, "--store", pg_store_url)
        assert r.exit_code == EXIT_FAILED, r.output
        assert "pg_dump --format=custom" in r.output and "Backups and upgrades" in r.output
    assert not (tmp_path / "b.db").exists()


async def test_a_store_being_restored_is_not_opened(tmp_path):
    """Nodes and commands take the store's lock shared; a restore holds it exclusively."""
    from registry.errors import StoreInUse
    from registry.stores import open_store
    from registry.stores.sqlite_files import _exclusive

    db = tmp_path / "idnode.db"
    with _exclusive(db), pytest.raises(StoreInUse, match="is being restored"):
        await open_store(f"sqlite:///{db}")
    store = await open_store(f"sqlite:///{db}")  # and once it is done, as usual
    await store.close()
