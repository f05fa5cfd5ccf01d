"""The files that build and run deploy/ for real (deploy/ci/), and the systemd unit.

deploy/ci/containers.sh itself runs as a CI step after the test suite (it needs root, Podman and
minutes); here: that the override only swaps images for ones the script builds, that the script is
wired into CI under a time limit and cleans up, that its probe works against a real node, and that
the systemd unit is sandboxed and passes systemd's own checks.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from resolver.cli import main as cli_main
from resolver.config import load_config
from resolver.server import SHUTDOWN_GRACE
from tests.conftest import ADMIN_SECRET, free_port
from tests.deploy.test_deploy_files import DEPLOY, ROOT, SETTINGS, dockerfile, exec_form, load_yaml
from tests.nodeproc import NodeProcess

CI = DEPLOY / "ci"
SCRIPT = CI / "containers.sh"
UNIT = DEPLOY / "systemd" / "idnode.service"


def script_text() -> str:
    return SCRIPT.read_text(encoding="utf-8")


def script_services() -> dict[str, str]:
    """deploy/ci/images/<name> -> tag, from the script's SERVICES list."""
    (listed,) = re.findall(r"^SERVICES=\(([^)]*)\)", script_text(), re.M)
    return dict(item.split(":") for item in listed.split())


# == the compose override and the images it names =================================================


def test_override_swaps_only_images_for_ones_the_script_builds() -> None:
    (base,) = load_yaml(DEPLOY / "docker-compose.yml")
    (override,) = load_yaml(CI / "compose.override.yml")
    assert set(override["services"]) <= set(base["services"])
    built = {f"localhost/idnode-ci/{name}:{tag}" for name, tag in script_services().items()}
    for name, service in override["services"].items():
        assert set(service) <= {"image", "build", "profiles"}, name
        if name.startswith("idnode-"):
            assert service["image"] == "localhost/idnode:latest"
            assert service["build"] == {"args": {"PYTHON_IMAGE": "localhost/idnode-ci/python:3.11"}}
        elif name == "grafana":  # in neither Debian nor PyPI: out of the stack, to its profile
            assert service == {"profiles": ["grafana"]}
        else:
            assert service["image"] in built, name
    # Every other service of the base file is replaced (nothing is pulled from a registry).
    replaced = {n for n, s in override["services"].items() if "image" in s or "profiles" in s}
    assert replaced == set(base["services"])
    # The auditor secret comes from the file the script writes, not from the environment.
    assert override["secrets"] == {
        "prometheus_auditor_secret": {"file": "/run/idnode-ci/secrets/prometheus_auditor_secret"}
    }
    assert "/run/idnode-ci/secrets/prometheus_auditor_secret" in script_text().replace("$RUNTIME", "/run/idnode-ci")


@pytest.mark.parametrize("name", ["python", "postgres", "redis", "nginx", "prometheus"])
def test_stand_in_images(name: str) -> None:
    """Each stand-in is built from the debootstrapped Debian base, says what it stands in for, and
    copies only files that exist; an entrypoint is executable and POSIX sh."""
    directory = CI / "images" / name
    text = (directory / "Containerfile").read_text(encoding="utf-8")
    assert "Stands in for" in text.splitlines()[0]
    assert "ARG DEBIAN_IMAGE=localhost/idnode-ci/debian:bookworm" in text and "FROM ${DEBIAN_IMAGE}" in text
    for source in re.findall(r"^COPY (\S+)", text, re.M):
        assert (directory / source).is_file(), source
    for entrypoint in directory.glob("*.sh"):
        assert entrypoint.stat().st_mode & 0o111, f"{entrypoint} is not executable"
        assert entrypoint.read_text().startswith("#!/bin/sh\n")
        subprocess.run(["sh", "-n", str(entrypoint)], check=True)
    if name != "python":
        # The tag the script gives it names the version Debian ships, which the override lists.
        tag = script_services()[name]
        override = (CI / "compose.override.yml").read_text()
        assert f"localhost/idnode-ci/{name}:{tag}" in override


def test_the_dockerfile_takes_the_python_stand_in() -> None:
    assert '--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"' in script_text()
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in dockerfile()


# == the script and its place in CI ===============================================================


def test_script_is_strict_bash_that_always_cleans_up() -> None:
    text = script_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert "trap cleanup EXIT" in text
    assert re.search(r"exec timeout --kill-after=\d+ \"\$LIMIT\"", text)
    # It stops only what it started: its compose project and its one container, in its own store.
    assert re.search(r"compose down -v", text) and "podman system reset" not in text
    assert "CONTAINERS_STORAGE_CONF" in text and "CONTAINERS_CONF" in text
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(SCRIPT), *map(str, CI.glob("images/*/*.sh"))], check=True)


def test_ci_runs_the_script_after_the_suite_with_a_time_limit() -> None:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    suite = lines.index("make test")
    (step,) = [n for n, line in enumerate(lines) if "deploy/ci/containers.sh" in line and not line.startswith("#")]
    assert step > suite
    assert re.search(r"IDNODE_CI_TIME_LIMIT=\d+", lines[step])


# == the probe the script runs inside the image ===================================================


def probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CI / "probe.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), **(env or {})},
        check=False,
    )


def test_probe_against_a_real_node(tmp_path: Path) -> None:
    native = free_port()
    node = NodeProcess(tmp_path, "--native-port", str(native), "--advertise-host", "198.51.100.7").wait_ready()
    try:
        ok = probe("native", "127.0.0.1", str(native), "0.NA/88.118.8", "198.51.100.7")
        assert ok.returncode == 0, ok.stderr
        assert "UDP 127.0.0.1" in ok.stdout and "TCP 127.0.0.1" in ok.stdout
        wrong = probe("native", "127.0.0.1", str(native), "0.NA/88.118.8", "192.0.2.1")
        assert wrong.returncode == 1 and "not 192.0.2.1" in wrong.stderr

        url = f"{node.url}/api/handles/88.118.8/probe"
        body = json.dumps({"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": "x:y"}}]})
        assert probe("request", "GET", url, "404").returncode == 0
        refused = probe("request", "PUT", url, "201", body)
        assert refused.returncode == 1 and "status 401" in refused.stderr
        admin = {"PROBE_AUTH": f"300:0.NA/88.118.8:{ADMIN_SECRET}"}
        assert probe("request", "PUT", url, "201", body, env=admin).returncode == 0
        got = probe("request", "GET", url, "200")
        assert got.returncode == 0 and '"x:y"' in got.stdout
        assert probe("request", "DELETE", url, "200", env=admin).returncode == 0
        assert probe("request", "GET", url, "404").returncode == 0
    finally:
        node.stop()
    assert probe("nonsense").returncode == 1


# == the systemd unit =============================================================================


def unit_entries() -> list[tuple[str, str, str]]:
    """(section, key, value) in order; keys may repeat, as systemd allows."""
    section, out = "", []
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def unit(key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in unit_entries() if s == section and k == key]


def test_unit_runs_idnode_serve_as_its_own_user() -> None:
    (exec_start,) = unit("ExecStart")
    argv = exec_form(exec_start)
    assert argv[0].endswith("/bin/idnode") and argv[1] == "serve"
    options = {opt for p in cli_main.commands["serve"].params for opt in p.opts}  # type: ignore[attr-defined]
    assert all(a in options for a in argv[2:] if a.startswith("--"))
    assert unit("User") == ["idnode"] and unit("Group") == ["idnode"]
    # The data directory is the state directory systemd creates for that user, private to it.
    assert unit("StateDirectory") == ["idnode"] and unit("StateDirectoryMode") == ["0700"]
    environment = dict(item.split("=", 1) for line in unit("Environment") for item in line.split())
    assert environment["IDNODE_DATA_DIR"] == "/var/lib/idnode"
    settings = {k: v for k, v in environment.items() if k.startswith("IDNODE_")}
    assert set(settings) <= SETTINGS and load_config(env=settings).data_dir == "/var/lib/idnode"
    assert unit("EnvironmentFile") == ["/etc/idnode/idnode.env"]
    # Stopping waits for the graceful shutdown (the supervisor's grace plus its 5 s margin).
    assert int(unit("TimeoutStopSec")[0]) > SHUTDOWN_GRACE + 5
    assert unit("KillSignal") == ["SIGTERM"]
    assert int(unit("LimitNOFILE")[0]) >= 2 * load_config(env={}).native_tcp_max_connections


def test_unit_is_sandboxed() -> None:
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert unit(key) == [value], key
    families = set(" ".join(unit("RestrictAddressFamilies")).split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in unit("SystemCallFilter")
    # Nothing writable outside the state directory (and the private /tmp).
    assert not unit("ReadWritePaths")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    """`systemd-analyze verify` (every key known and well-formed; it needs the command to exist, so
    the copy runs this checkout's idnode) and `security --offline`: overall exposure at most 2.0 of
    10 (threshold 20 in its units)."""
    idnode = Path(sys.executable).with_name("idnode")
    copy = tmp_path / "idnode.service"
    copy.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={idnode}", UNIT.read_text(), flags=re.M))
    verify = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and not verify.stdout.strip() and not verify.stderr.strip(), verify
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert security.returncode == 0, security.stdout[-2000:] + security.stderr
