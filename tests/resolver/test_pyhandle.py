"""End to end: a real ``idnode serve`` process, driven by pyhandle's RESTHandleClient and the CLI.

Each server gets a fresh data directory and a free port; it is stopped with SIGTERM by its PID.
The admin CLI commands run against a data directory before a server is started on it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pyhandle.client.resthandleclient import RESTHandleClient
from pyhandle.handleexceptions import (
    GenericHandleError,
    HandleAlreadyExistsException,
    HandleAuthenticationError,
    HandleNotFoundException,
)

from tests.conftest import ADMIN_SECRET, free_port
from tests.resolver.conftest import NODE_ADMIN, NODE_PREFIX, basic, make_uscc

IDNODE = str(Path(sys.executable).with_name("idnode"))
NODE_HANDLE = f"0.NA/{NODE_PREFIX}"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDNODE_")}
    env["IDNODE_ADMIN_SECRET"] = ADMIN_SECRET
    return env


def idnode(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run an ``idnode`` admin command on ``data_dir``."""
    proc = subprocess.run(
        [IDNODE, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, env=_env(), timeout=120
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


class Node:
    """A running ``idnode serve`` on a free loopback port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data_dir / "serve.log", "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                IDNODE,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
                "--native-port",
                "0",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise AssertionError(f"idnode serve exited with {self.proc.returncode}:\n{self.log.read()}")
            try:
                r = requests.get(f"{self.url}/api/handles/{NODE_HANDLE}", timeout=2)
                if r.status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError("idnode serve did not answer within 60 s")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()
        return self.proc.returncode

    # -- raw HTTP helpers (what the tests check pyhandle's work against) --
    def get(self, handle: str, **params: Any) -> requests.Response:
        return requests.get(f"{self.url}/api/handles/{handle}", params=params, timeout=10)

    def admin_post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = requests.post(f"{self.url}{path}", json=body, headers=basic(NODE_ADMIN, ADMIN_SECRET), timeout=30)
        assert r.status_code == 201, r.text
        return r.json()

    def onboard(self, n: int) -> dict[str, Any]:
        promoter = self.admin_post("/api/promoters", {"name": f"Promoter {n}", "uscc": make_uscc(n, "92")})
        return self.admin_post(
            "/api/enterprises", {"name": f"Enterprise {n}", "uscc": make_uscc(n), "promoter": promoter["id"]}
        )

    def client(self, username: str | None = None, password: str | None = None, **extra: Any) -> RESTHandleClient:
        """Constructed as pyhandle's users do it (HTTPS verification off for the test server)."""
        if username is None:
            return RESTHandleClient.instantiate_for_read_access(self.url, HTTPS_verify=False)
        return RESTHandleClient(
            handle_server_url=self.url, username=username, password=password, HTTPS_verify=False, **extra
        )


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("idnode-e2e"))
    try:
        yield n
    finally:
        assert n.stop() == 0, "idnode serve did not shut down cleanly on SIGTERM"


@pytest.fixture(scope="module")
def enterprises(node: Node) -> list[dict[str, Any]]:
    return [node.onboard(1), node.onboard(2)]


def _values(node: Node, handle: str) -> dict[int, dict[str, Any]]:
    r = node.get(handle, auth="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["handle"] == handle
    return {v["index"]: v for v in body["values"]}


def _lifecycle(node: Node, client: RESTHandleClient, handle: str) -> None:
    """register → retrieve → modify → delete value → delete handle, each checked on the wire."""
    assert client.register_handle(handle, "https://example.com/v1", CHECKSUM="abc123", NOTE="first") == handle
    stored = _values(node, handle)
    assert stored[1]["type"] == "URL" and stored[1]["data"] == {"format": "string", "value": "https://example.com/v1"}
    admin = next(v for v in stored.values() if v["type"] == "HS_ADMIN")
    assert admin["index"] == 100
    assert admin["data"]["value"]["permissions"] == "011111110011"
    with pytest.raises(HandleAlreadyExistsException):
        client.register_handle(handle, "https://example.com/again")

    record = client.retrieve_handle_record(handle)
    assert record["URL"] == "https://example.com/v1" and record["CHECKSUM"] == "abc123" and record["NOTE"] == "first"
    assert client.get_value_from_handle(handle, "URL") == "https://example.com/v1"

    assert client.modify_handle_value(handle, URL="https://example.com/v2", EXTRA="added") == handle
    after = _values(node, handle)
    assert after[1]["data"]["value"] == "https://example.com/v2"
    assert {v["type"] for v in after.values()} >= {"URL", "CHECKSUM", "NOTE", "EXTRA", "HS_ADMIN"}
    assert after[1]["timestamp"] >= stored[1]["timestamp"]

    assert client.delete_handle_value(handle, "CHECKSUM") == handle
    assert "CHECKSUM" not in {v["type"] for v in _values(node, handle).values()}
    assert client.delete_handle_value(handle, ["NOTE", "EXTRA"]) == handle
    assert {v["type"] for v in _values(node, handle).values()} == {"URL", "HS_ADMIN"}

    assert client.delete_handle(handle) == handle
    r = node.get(handle)
    assert r.status_code == 404 and r.json() == {"responseCode": 100, "handle": handle, "message": r.json()["message"]}
    assert client.retrieve_handle_record(handle) is None
    with pytest.raises(HandleNotFoundException):
        client.delete_handle(handle)


def test_pyhandle_as_node_admin(node: Node, enterprises: list[dict[str, Any]]) -> None:
    client = node.client(NODE_ADMIN, ADMIN_SECRET)
    _lifecycle(node, client, f"{enterprises[0]['prefix']}/node-admin-{time.time_ns()}")
    _lifecycle(node, client, f"{NODE_PREFIX}/node-own-{time.time_ns()}")


def test_pyhandle_as_enterprise_admin(node: Node, enterprises: list[dict[str, Any]]) -> None:
    e = enterprises[0]
    client = node.client(e["admin"], e["secret"])
    _lifecycle(node, client, f"{e['prefix']}/ent-{time.time_ns()}")


def test_pyhandle_as_enterprise_admin_naming_itself_owner(node: Node, enterprises: list[dict[str, Any]]) -> None:
    e = enterprises[0]
    client = node.client(e["admin"], e["secret"], handleowner=e["admin"])
    _lifecycle(node, client, f"{e['prefix']}/owned-{time.time_ns()}")


def test_pyhandle_refused_under_another_enterprise(node: Node, enterprises: list[dict[str, Any]]) -> None:
    a, b = enterprises
    theirs = f"{b['prefix']}/theirs-{time.time_ns()}"
    b_client = node.client(b["admin"], b["secret"], handleowner=b["admin"])
    b_client.register_handle(theirs, "https://b.example/1")
    before = node.get(theirs, auth="true").json()

    intruder = node.client(a["admin"], a["secret"], handleowner=a["admin"])
    new = f"{b['prefix']}/intrusion-{time.time_ns()}"
    for attempt in (
        lambda: intruder.register_handle(new, "https://evil.example"),
        lambda: intruder.modify_handle_value(theirs, URL="https://evil.example"),
        lambda: intruder.delete_handle_value(theirs, "URL"),
        lambda: intruder.delete_handle(theirs),
    ):
        with pytest.raises((GenericHandleError, HandleAuthenticationError)) as info:
            attempt()
        resp = info.value.response
        assert resp.status_code == 403 and resp.json()["responseCode"] == 400, resp.text
    assert node.get(new).status_code == 404
    assert node.get(theirs, auth="true").json() == before


def test_pyhandle_wrong_or_missing_credentials(node: Node, enterprises: list[dict[str, Any]]) -> None:
    e = enterprises[0]
    h = f"{e['prefix']}/wrong-{time.time_ns()}"
    bad = node.client(e["admin"], "not-the-secret", handleowner=e["admin"])
    # A wrong secret is an authentication error to pyhandle (HTTP 401, as HANDLE.NET answers), with
    # a JSON body naming the handle and both challenges.
    with pytest.raises(HandleAuthenticationError) as info:
        bad.register_handle(h, "https://evil.example")
    resp = info.value.response
    assert resp.status_code == 401 and resp.json()["responseCode"] == 402 and resp.json()["handle"] == h
    assert (
        resp.headers["WWW-Authenticate"].startswith('Basic realm="idnode"')
        and "Handle sessionId=" in resp.headers["WWW-Authenticate"]
    )
    theirs = f"{e['prefix']}/kept-{time.time_ns()}"
    node.client(e["admin"], e["secret"], handleowner=e["admin"]).register_handle(theirs, "https://example.com/kept")
    with pytest.raises(HandleAuthenticationError):
        bad.modify_handle_value(theirs, URL="https://evil.example")
    assert _values(node, theirs)[1]["data"]["value"] == "https://example.com/kept"
    with pytest.raises(HandleAuthenticationError) as info:
        bad.delete_handle(h)
    assert info.value.response.status_code == 401 and info.value.response.json()["handle"] == h
    assert node.get(h).status_code == 404
    # A read-only client cannot write at all; pyhandle says so before sending anything.
    with pytest.raises(HandleAuthenticationError):
        node.client().register_handle(h, "https://evil.example")
    # An identity whose handle does not exist is refused at construction (pyhandle checks it).
    with pytest.raises(HandleNotFoundException):
        node.client(f"300:0.NA/{NODE_PREFIX}.4040", "x")


def test_pyhandle_read_only_client(node: Node, enterprises: list[dict[str, Any]]) -> None:
    e = enterprises[1]
    h = f"{e['prefix']}/public-{time.time_ns()}"
    node.client(e["admin"], e["secret"], handleowner=e["admin"]).register_handle(h, "https://example.com/pub")
    reader = node.client()
    assert reader.retrieve_handle_record(h)["URL"] == "https://example.com/pub"
    assert reader.retrieve_handle_record_json(h, auth=True)["handle"] == h
    assert reader.retrieve_handle_record(f"{e['prefix']}/absent") is None
    prefix_record = reader.retrieve_handle_record(f"0.NA/{e['prefix']}")
    assert "HS_SECKEY" not in prefix_record and "HS_ADMIN" in prefix_record
    # Filters as pyhandle passes them.
    only_url = reader.retrieve_handle_record_json(h, type=["URL"])
    assert [v["type"] for v in only_url["values"]] == ["URL"]
    assert [v["index"] for v in reader.retrieve_handle_record_json(h, indices=[1])["values"]] == [1]


# == the admin CLI ==============================================================================


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


def test_cli_admin_commands_then_serve(tmp_path: Path) -> None:
    data = tmp_path / "node"
    data.mkdir()
    # Credit codes with a letter check character (all-digit ones are covered in test_rest_api).
    p1 = _json(
        idnode("promoter", "add", "--name", "Promoter A", "--uscc", make_uscc(14, "92"), "--json", data_dir=data)
    )
    p2 = _json(
        idnode("promoter", "add", "--name", "Promoter B", "--uscc", make_uscc(15, "92"), "--json", data_dir=data)
    )
    assert p1["uscc"] == make_uscc(14, "92") and p1["id"] != p2["id"] and "secret" not in p1
    listed = _json(idnode("promoter", "list", "--json", data_dir=data))
    assert [p["id"] for p in listed] == [p1["id"], p2["id"]]

    e1 = _json(
        idnode(
            "enterprise",
            "add",
            "--name",
            "Works A",
            "--uscc",
            make_uscc(22),
            "--promoter",
            str(p1["id"]),
            "--json",
            data_dir=data,
        )
    )
    e2 = _json(
        idnode(
            "enterprise",
            "add",
            "--name",
            "Works B",
            "--uscc",
            make_uscc(23),
            "--promoter",
            make_uscc(15, "92"),
            "--enterprise-prefix",
            f"{NODE_PREFIX}.Beta",
            "--json",
            data_dir=data,
        )
    )
    assert e1["prefix"] == f"{NODE_PREFIX}.1001" and e1["admin"] == f"300:0.NA/{NODE_PREFIX}.1001"
    assert e2["prefix"] == f"{NODE_PREFIX}.Beta" and e2["promoter"] == p2["id"]
    assert e1["secret"] and e2["secret"] and e1["secret"] != e2["secret"]

    # Plain (non-JSON) output is one key=value line per row and never shows secrets.
    plain = idnode("enterprise", "list", data_dir=data).stdout
    assert f"prefix={NODE_PREFIX}.1001" in plain and f"prefix={NODE_PREFIX}.Beta" in plain
    assert e1["secret"] not in plain and "secret" not in plain

    moved = _json(idnode("enterprise", "move", e1["prefix"], "--promoter", str(p2["id"]), "--json", data_dir=data))
    assert moved["promoter"] == p2["id"]
    assert _json(idnode("enterprise", "disable", e2["uscc"], "--json", data_dir=data))["status"] == "disabled"
    rows = {e["prefix"]: e for e in _json(idnode("enterprise", "list", "--json", data_dir=data))}
    assert rows[e1["prefix"]]["promoter"] == p2["id"] and rows[e2["prefix"]]["status"] == "disabled"
    assert all("secret" not in e for e in rows.values())

    # Refusals: a message on stderr, a non-zero exit, no traceback, nothing recorded.
    for args in (
        ("enterprise", "add", "--name", "X", "--uscc", make_uscc(24), "--promoter", "999"),
        ("enterprise", "add", "--name", "X", "--uscc", "123", "--promoter", str(p1["id"])),
        ("enterprise", "add", "--name", "X", "--uscc", make_uscc(22), "--promoter", str(p1["id"])),
        ("enterprise", "move", e1["prefix"], "--promoter", str(p2["id"])),
        ("enterprise", "disable", "no-such-enterprise"),
        ("promoter", "add", "--name", "Bad", "--uscc", "91440111000000001X"),
    ):
        proc = idnode(*args, data_dir=data, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr and proc.stderr.strip(), (args, proc.stderr)
    assert len(_json(idnode("enterprise", "list", "--json", data_dir=data))) == 2
    assert len(_json(idnode("promoter", "list", "--json", data_dir=data))) == 2

    # `idnode serve --get` answers one request in-process and exits.
    got = idnode("serve", "--get", f"/api/handles/{NODE_HANDLE}", data_dir=data)
    body = json.loads(got.stdout)
    assert body["responseCode"] == 1 and body["handle"] == NODE_HANDLE
    assert "HS_SECKEY" not in {v["type"] for v in body["values"]}
    got = idnode("serve", "--get", f"/api/handles/0.NA/{e1['prefix']}", data_dir=data)
    assert json.loads(got.stdout)["handle"] == f"0.NA/{e1['prefix']}"
    missing = idnode("serve", "--get", f"/api/handles/{e1['prefix']}/absent", data_dir=data, check=False)
    assert missing.returncode == 1 and json.loads(missing.stdout)["responseCode"] == 100

    # A server on the same data: the CLI-made credentials work, the disabled enterprise cannot write.
    node = Node(data)
    try:
        h = f"{e1['prefix']}/from-cli-{time.time_ns()}"
        assert (
            node.client(e1["admin"], e1["secret"], handleowner=e1["admin"]).register_handle(h, "https://a.example") == h
        )
        assert node.get(h).json()["handle"] == h
        blocked = f"{e2['prefix']}/blocked"
        with pytest.raises((GenericHandleError, HandleAuthenticationError)) as info:
            node.client(e2["admin"], e2["secret"], handleowner=e2["admin"]).register_handle(
                blocked, "https://b.example"
            )
        assert info.value.response.status_code == 403
        assert node.get(blocked).status_code == 404
    finally:
        assert node.stop() == 0

    # Re-enabled through the CLI (server stopped), it writes again.
    assert _json(idnode("enterprise", "enable", e2["prefix"], "--json", data_dir=data))["status"] == "active"
    node = Node(data)
    try:
        h = f"{e2['prefix']}/unblocked"
        client = node.client(e2["admin"], e2["secret"], handleowner=e2["admin"])
        assert client.register_handle(h, "https://b.example") == h
    finally:
        assert node.stop() == 0
