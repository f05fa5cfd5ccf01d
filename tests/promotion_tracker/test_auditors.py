"""The bureau's identities listed and revoked through the API and the CLI, on a real ``idnode serve``:
a revoked identity is refused at once, also when the CLI revokes it in another process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ADMIN_SECRET
from tests.nodeproc import IDNODE, NodeProcess
from tests.resolver.conftest import NODE_ADMIN, NODE_PREFIX

ADMIN = (NODE_ADMIN, ADMIN_SECRET)
BUREAU_URLS = ["/api/promotion/tallies", "/api/promotion/policy", "/bureau", "/api/enterprises"]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path / "data").wait_ready()
    try:
        yield proc
    finally:
        proc.stop()


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IDNODE_ADMIN_SECRET": ADMIN_SECRET}
    proc = subprocess.run(
        [IDNODE, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _add(node: NodeProcess, name: str) -> tuple[str, str]:
    r = requests.post(f"{node.url}/api/auditors", json={"name": name}, auth=ADMIN, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["identity"], r.json()["secret"]


def _statuses(node: NodeProcess, credentials: tuple[str, str]) -> list[int]:
    return [requests.get(node.url + path, auth=credentials, timeout=30).status_code for path in BUREAU_URLS]


def _refused(statuses: list[int]) -> bool:
    """401 for an unknown identity (HANDLE.NET's answer; 403 on nodes before the credentials rework)."""
    return len(statuses) == len(BUREAU_URLS) and set(statuses) <= {401, 403}


def test_list_and_revoke_through_the_api(node: NodeProcess) -> None:
    first = _add(node, "baiyun")
    second = _add(node, "district-audit")
    assert _statuses(node, first) == [200, 200, 200, 200]
    listed = requests.get(f"{node.url}/api/auditors", auth=ADMIN, timeout=10).json()["auditors"]
    assert [(a["name"], a["identity"]) for a in listed] == [
        ("baiyun", f"300:{NODE_PREFIX}/auditor/baiyun"),
        ("district-audit", f"300:{NODE_PREFIX}/auditor/district-audit"),
    ]
    assert all(a["created"].endswith("Z") for a in listed)
    # Only the node administrator lists and revokes; an auditor can do neither.
    assert requests.get(f"{node.url}/api/auditors", auth=first, timeout=10).status_code == 403
    assert requests.delete(f"{node.url}/api/auditors/district-audit", auth=first, timeout=10).status_code == 403
    assert requests.get(f"{node.url}/api/auditors", timeout=10).status_code == 401

    r = requests.delete(f"{node.url}/api/auditors/baiyun", auth=ADMIN, timeout=10)
    assert r.status_code == 200 and r.json()["identity"] == first[0] and r.json()["revoked"] is True
    # At once: the very next requests are refused (the identity and its key no longer exist).
    assert _refused(_statuses(node, first))
    assert _statuses(node, second) == [200, 200, 200, 200]
    listed = requests.get(f"{node.url}/api/auditors", auth=ADMIN, timeout=10).json()["auditors"]
    assert [a["name"] for a in listed] == ["district-audit"]
    # Revoking twice, or a name that never existed, is a 404; a bad name a 400.
    assert requests.delete(f"{node.url}/api/auditors/baiyun", auth=ADMIN, timeout=10).status_code == 404
    assert requests.delete(f"{node.url}/api/auditors/nobody", auth=ADMIN, timeout=10).status_code == 404
    assert requests.delete(f"{node.url}/api/auditors/%C2%B2", auth=ADMIN, timeout=10).status_code == 400
    # The name can be given again: a new identity with a new secret, the old secret stays refused.
    again = _add(node, "baiyun")
    assert again[1] != first[1]
    assert _statuses(node, again) == [200, 200, 200, 200]
    assert _refused(_statuses(node, first))


def test_list_and_revoke_through_the_cli_while_a_node_serves(node: NodeProcess, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    out = _cli(data_dir, "auditor", "add", "--name", "cli-bureau").stdout
    identity = out.split("identity=")[1].split()[0]
    secret = out.split("secret=")[1].split()[0]
    assert _statuses(node, (identity, secret)) == [200, 200, 200, 200]
    listed = _cli(data_dir, "auditor", "list", "--json").stdout
    assert f'"identity": "{identity}"' in listed
    assert _cli(data_dir, "auditor", "revoke", "cli-bureau").stdout.strip() == f"revoked {identity}"
    # The serving process reads identities from the shared store: refused from the next request on.
    assert _refused(_statuses(node, (identity, secret)))
    assert '"cli-bureau"' not in _cli(data_dir, "auditor", "list", "--json").stdout
