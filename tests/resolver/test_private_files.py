"""The data directory and the store's files are private to the node's user, and the report-signing
key can live in a file instead of the store. Against real ``idnode serve`` and ``idnode`` processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

from promotion_tracker.signing import Signer
from tests.conftest import ADMIN_SECRET, free_port
from tests.nodeproc import IDNODE, NodeProcess
from tests.resolver.conftest import NODE_ADMIN, basic

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def get_json(url: str, headers: dict[str, str] | None = None) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
        return json.loads(r.read())


def put_url(url: str, handle: str, target: str) -> None:
    body = json.dumps([{"index": 1, "type": "URL", "data": target}]).encode()
    headers = {"Content-Type": "application/json", **basic(NODE_ADMIN, ADMIN_SECRET)}
    req = urllib.request.Request(f"{url}/api/handles/{handle}", data=body, method="PUT", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status in (200, 201)


def key_id(url: str) -> str:
    return get_json(f"{url}/api/promotion/public-key")["key_id"]


def meta(db: Path, key: str) -> str | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def store_holds_a_private_key(db: Path) -> bool:
    with sqlite3.connect(db) as conn:
        return any("PRIVATE KEY" in str(v) for (v,) in conn.execute("SELECT value FROM meta"))


def idnode(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IDNODE_")} | (env or {})
    return subprocess.run([IDNODE, *args], capture_output=True, text=True, env=full_env, timeout=120)


# == data directory and store files ===============================================================


def test_new_data_dir_and_store_files_are_created_private(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"  # does not exist yet
    node = NodeProcess(tmp_path / "logs", "--data-dir", str(data)).wait_ready()
    try:
        put_url(node.url, "88.118.8/private-1", "https://example.com/1")  # the WAL has content
        assert mode(data) == 0o700
        db = data / "idnode.db"
        for path in (db, db.with_name("idnode.db-wal"), db.with_name("idnode.db-shm")):
            assert path.exists() and mode(path) == 0o600, (path, oct(mode(path)))
    finally:
        node.stop()
    assert "could not be made private" not in node.log()


def test_loose_data_dir_and_store_files_are_tightened_on_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    node = NodeProcess(data).wait_ready()
    put_url(node.url, "88.118.8/private-2", "https://example.com/2")
    os.kill(node.proc.pid, signal.SIGKILL)  # leaves the -wal and -shm files behind
    node.proc.wait(10)
    node.stop()
    db = data / "idnode.db"
    files = [db, db.with_name("idnode.db-wal"), db.with_name("idnode.db-shm")]
    assert all(p.exists() for p in files)
    data.chmod(0o755)
    for path in files:
        path.chmod(0o644)

    node = NodeProcess(data).wait_ready()
    try:
        assert mode(data) == 0o700
        for path in files:
            assert not path.exists() or mode(path) == 0o600, (path, oct(mode(path)))
        assert mode(db) == 0o600
        got = get_json(f"{node.url}/api/handles/88.118.8/private-2")
        assert got["values"][0]["data"]["value"] == "https://example.com/2"  # nothing lost
    finally:
        node.stop()


def test_a_store_outside_the_data_dir_leaves_the_data_dir_alone(tmp_path: Path) -> None:
    """``--store`` elsewhere: its file is private, the directory it sits in is not the node's to
    change, and neither is the (unused) data directory."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    data = tmp_path / "data"
    node = NodeProcess(data, "--store", f"sqlite:///{shared}/node.db").wait_ready()
    try:
        assert mode(shared / "node.db") == 0o600
        assert mode(shared) == 0o755
        assert mode(data) == 0o755  # NodeProcess made it for the log; the node keeps nothing there
    finally:
        node.stop()


# == the report-signing key =======================================================================


def test_report_key_moves_from_the_store_to_a_private_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / "idnode.db"
    key_file = tmp_path / "keys" / "report-key.pem"  # its directory does not exist yet

    node = NodeProcess(data).wait_ready()  # the key is generated in the store
    try:
        kid = key_id(node.url)
    finally:
        node.stop()
    assert store_holds_a_private_key(db)

    node = NodeProcess(data, "--report-key-file", str(key_file)).wait_ready()
    try:
        assert key_id(node.url) == kid  # the same key, now read from the file
        assert mode(key_file) == 0o600 and mode(key_file.parent) == 0o700
        assert Signer.from_pem(key_file.read_text()).public_jwk()["kid"] == kid
        record = get_json(f"{node.url}/api/handles/0.NA/88.118.8?index=301")
        assert record["values"][0]["type"] == "IDNODE_REPORT_KEY"
    finally:
        node.stop()
    assert not store_holds_a_private_key(db)
    assert meta(db, "report_signing_key") == f"external:{kid}"

    # The CLI signs with the file too; without it, it refuses instead of making a key of its own.
    env = {"IDNODE_DATA_DIR": str(data), "IDNODE_REPORT_KEY_FILE": str(key_file)}
    signed = idnode("tally", "--format", "json", env=env)
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["signature"]["key_id"] == kid
    refused = idnode("tally", "--format", "json", env={"IDNODE_DATA_DIR": str(data)})
    assert refused.returncode != 0 and "kept in a file" in refused.stderr and kid in refused.stderr

    # So does a node started without the file.
    node = NodeProcess(data)
    try:
        assert node.proc.wait(60) != 0
    finally:
        node.stop()
    assert "report_key_file" in node.log() and kid in node.log()
    assert not store_holds_a_private_key(db)


def test_an_existing_key_file_is_used_and_made_private(tmp_path: Path) -> None:
    key_file = tmp_path / "report-key.pem"
    signer = Signer.generate()
    key_file.write_text(signer.to_pem())
    key_file.chmod(0o644)
    data = tmp_path / "data"
    node = NodeProcess(data, "--report-key-file", str(key_file)).wait_ready()
    try:
        assert key_id(node.url) == signer.public_jwk()["kid"]
        assert mode(key_file) == 0o600
    finally:
        node.stop()
    assert not store_holds_a_private_key(data / "idnode.db")

    bad = tmp_path / "not-a-key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    node = NodeProcess(tmp_path / "data-2", "--report-key-file", str(bad))
    try:
        assert node.proc.wait(60) != 0
    finally:
        node.stop()
    assert "not an unencrypted Ed25519 private key" in node.log()


# == files the node cannot tighten: a warning, and the node still serves ==========================


def test_files_it_cannot_make_private_are_named_in_a_warning(tmp_path: Path) -> None:
    """The report key file belongs to another user and is readable by all; the node runs without
    the right to chmod others' files (root without CAP_FOWNER, as a non-root user would be). It
    warns, naming the file, and serves with that key."""
    assert os.geteuid() == 0, "this test drops CAP_FOWNER from root and needs root (CI runs as root)"
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed"
    key_file = tmp_path / "report-key.pem"
    signer = Signer.generate()
    key_file.write_text(signer.to_pem())
    key_file.chmod(0o644)
    os.chown(key_file, NOBODY, NOBODY)
    data = tmp_path / "data"
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDNODE_")} | {"IDNODE_ADMIN_SECRET": ADMIN_SECRET}
    cmd = [
        "setpriv", "--bounding-set=-fowner", "--inh-caps=-fowner",
        IDNODE, "serve", "--port", str(port), "--native-port", "0",
        "--data-dir", str(data), "--report-key-file", str(key_file),
    ]  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                published = key_id(url)
                break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        assert published == signer.public_jwk()["kid"]
        assert mode(key_file) == 0o644
        assert mode(data) == 0o700 and mode(data / "idnode.db") == 0o600  # its own files it can
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(40)
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    warnings = [e for e in events if e["level"] == "warning" and "could not be made private" in e["event"]]
    assert len(warnings) == 1 and str(key_file) in warnings[0]["event"], events
    assert "mode 644" in warnings[0]["event"]
