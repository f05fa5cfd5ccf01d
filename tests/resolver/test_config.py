"""Settings: layering, validation, documentation, TLS and the plain-HTTP credential rule."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from resolver.cli import main
from resolver.config import Config, ConfigError, load_config
from resolver.http.app import create_app
from resolver.server import _ssl_context
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, basic

ROOT = Path(__file__).resolve().parents[2]


def test_layering_defaults_file_env_flags(tmp_path):
    cfg = tmp_path / "idnode.toml"
    cfg.write_text('port = 9001\nprefix = "88.200.1"\n[other]\n', encoding="utf-8")
    cfg.write_text('[idnode]\nport = 9001\nprefix = "88.200.1"\nworkers = 2\n', encoding="utf-8")
    c = load_config(cfg, env={"IDNODE_PORT": "9002", "IDNODE_ACCESS_LOG": "yes"}, overrides={"workers": 3})
    assert (c.port, c.prefix, c.access_log, c.workers) == (9002, "88.200.1", True, 3)
    assert load_config(env={}) == Config()


@pytest.mark.parametrize(
    "env",
    [{"IDNODE_PORT": "http"}, {"IDNODE_PORT": "0"}, {"IDNODE_ACCESS_LOG": "maybe"}, {"IDNODE_TLS_CERT": "a.pem"}],
)
def test_bad_settings_are_refused(env):
    with pytest.raises(ConfigError):
        load_config(env=env)


def test_unknown_setting_in_file(tmp_path):
    cfg = tmp_path / "idnode.toml"
    cfg.write_text("prot = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="prot"):
        load_config(cfg, env={})


def test_every_setting_is_documented():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for f in dataclasses.fields(Config):
        assert f"`{f.name}`" in readme, f"{f.name} missing from the README settings table"
        assert "--" + f.name.replace("_", "-") in result.output, f"--{f.name} missing from serve --help"


def test_module_entry_point_has_every_command():
    """``python -m resolver.cli`` builds the whole command group before it runs (the guard is last)."""
    result = subprocess.run(
        [sys.executable, "-m", "resolver.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("Commands:")[1].split("Exit codes:")[0]
    listed = {line.split()[0] for line in commands.splitlines() if line.strip()}
    assert listed == set(main.commands) and {"auditor", "import", "tally"} <= listed


def test_get_mode_runs_one_request(tmp_path, monkeypatch):
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "--get", "/api/handles/0.NA/88.118.8"])
    assert result.exit_code == 0, result.output
    assert '"handle":"0.NA/88.118.8"' in result.output
    assert (tmp_path / "idnode.db").exists()


async def test_credentials_refused_over_plain_http_off_loopback(tmp_path, monkeypatch):
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    config = load_config(env={}, overrides={"data_dir": str(tmp_path), "host": "0.0.0.0"})
    body = {"values": [{"index": 1, "type": "URL", "data": "https://example.com"}]}
    async with TestClient(TestServer(create_app(config))) as client:
        r = await client.put("/api/handles/88.118.8/x", json=body, headers=basic(NODE_ADMIN, ADMIN_SECRET))
        assert r.status == 401
        assert "HTTPS" in (await r.json())["message"]
        assert (await client.get("/api/handles/88.118.8/x")).status == 404
    config = load_config(env={}, overrides={"data_dir": str(tmp_path), "host": "0.0.0.0", "insecure_auth": True})
    async with TestClient(TestServer(create_app(config))) as client:
        r = await client.put("/api/handles/88.118.8/x", json=body, headers=basic(NODE_ADMIN, ADMIN_SECRET))
        assert r.status == 201


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


async def test_tls_accepts_credentials_off_loopback(tmp_path, monkeypatch):
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    cert, key = _self_signed(tmp_path)
    config = load_config(
        env={}, overrides={"data_dir": str(tmp_path), "host": "0.0.0.0", "tls_cert": cert, "tls_key": key}
    )
    server = TestServer(create_app(config))
    await server.start_server(ssl=_ssl_context(config))
    client_ctx = ssl.create_default_context(cafile=cert)
    client_ctx.check_hostname = False
    async with TestClient(server, connector=aiohttp.TCPConnector(ssl=client_ctx)) as client:
        body = {"values": [{"index": 1, "type": "URL", "data": "https://example.com"}]}
        r = await client.put("/api/handles/88.118.8/tls", json=body, headers=basic(NODE_ADMIN, ADMIN_SECRET))
        assert r.status == 201, await r.text()
        site = await (await client.get("/api/handles/0.NA/88.118.8?type=HS_SITE")).json()
        interfaces = site["values"][0]["data"]["value"]["servers"][0]["interfaces"]
        assert any(i["protocol"] == "HTTPS" for i in interfaces)
