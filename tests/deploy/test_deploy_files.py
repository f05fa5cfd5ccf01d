"""deploy/: every file parses, and what the files reference exists in the code: the command, ports,
HTTP paths, IDNODE_* settings and the metric names in the dashboard and the Prometheus rules. The
files are also built and run for real by deploy/ci/containers.sh (a CI step after the test suite);
tests/deploy/test_ci_files.py checks that script's own files."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from resolver.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
JSON_FILES = sorted(DEPLOY.rglob("*.json"))
K8S = DEPLOY / "k8s"
DEFAULTS = Config()
SETTINGS = {"IDNODE_" + f.name.upper() for f in dataclasses.fields(Config)} | {"IDNODE_ADMIN_SECRET"}
HTTP_PORT, NATIVE_PORT = DEFAULTS.port, DEFAULTS.native_port


class ComposeLoader(yaml.SafeLoader):
    """YAML with the Compose merge tags (!override, !reset) an override file may use."""


for _tag in ("!override", "!reset"):
    ComposeLoader.add_constructor(
        _tag,
        lambda loader, node: (
            loader.construct_mapping(node, deep=True)
            if isinstance(node, yaml.MappingNode)
            else loader.construct_sequence(node, deep=True)
            if isinstance(node, yaml.SequenceNode)
            else loader.construct_scalar(node)
        ),
    )


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=ComposeLoader) if doc is not None]


def k8s_docs() -> list[dict[str, Any]]:
    """The objects kubectl creates (the kustomization file is not one)."""
    paths = [p for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"]
    return [doc for path in paths for doc in load_yaml(path)]


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_docs() if d["kind"] == kind]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage's and every stage's lines, continuations joined."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_froms() -> list[str]:
    """The FROM images, with the ARG defaults declared before the first FROM filled in."""
    lines = dockerfile()
    first = next(n for n, (i, _) in enumerate(lines) if i == "FROM")
    defaults = dict(a.split("=", 1) for i, a in lines[:first] if i == "ARG" and "=" in a)
    out = []
    for i, a in lines:
        if i == "FROM":
            image = a.split()[0]
            out.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image))
    return out


def exec_form(args: str) -> list[str]:
    args = args.strip()
    return json.loads(args) if args.startswith("[") else shlex.split(args)


@pytest.fixture(scope="module")
def app_paths() -> set[str]:
    from resolver.http.app import create_app

    app = create_app(load_config(env={}))
    return {resource.canonical for resource in app.router.resources()}


# == parsing ======================================================================================


def test_deploy_holds_the_expected_files() -> None:
    for name in (
        "Dockerfile",
        "docker-compose.yml",
        "README.md",
        "prometheus/prometheus.yml",
        "grafana/dashboards/idnode.json",
        "k8s/deployment.yaml",
        "k8s/service.yaml",
        "k8s/hpa.yaml",
        "k8s/pdb.yaml",
        "k8s/configmap.yaml",
    ):
        assert (DEPLOY / name).is_file(), name
    assert list((DEPLOY / "grafana/provisioning/datasources").glob("*.yml"))
    assert list((DEPLOY / "grafana/provisioning/dashboards").glob("*.yml"))
    assert (ROOT / ".dockerignore").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    docs = load_yaml(path)
    assert docs and all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path: Path) -> None:
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


def test_every_deploy_file_is_documented() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.name != "README.md":
            rel = str(path.relative_to(DEPLOY))
            assert rel in readme or f"deploy/{rel}" in readme, f"deploy/README.md does not mention {rel}"
    assert ".dockerignore" in readme


# == Dockerfile ===================================================================================


def test_dockerfile_command_exists_in_the_cli() -> None:
    from resolver.cli import main

    lines = dockerfile()
    entry = [exec_form(a) for i, a in lines if i == "ENTRYPOINT"][-1]
    cmd = [exec_form(a) for i, a in lines if i == "CMD"][-1]
    argv = entry + cmd
    assert argv[:2] == ["idnode", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["idnode"] == "resolver.cli:main"
    serve = main.commands["serve"]  # type: ignore[attr-defined]
    options = {opt for p in serve.params for opt in p.opts}
    for arg in argv[2:]:
        if arg.startswith("--"):
            assert arg in options, arg
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


def test_dockerfile_base_user_ports_and_healthcheck(app_paths: set[str]) -> None:
    lines = dockerfile()
    assert dockerfile_froms() == ["python:3.11-slim", "python:3.11-slim"]
    user = [a for i, a in lines if i == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    exposed = {p for i, a in lines if i == "EXPOSE" for p in a.split()}
    assert exposed == {str(HTTP_PORT), f"{NATIVE_PORT}/udp", f"{NATIVE_PORT}/tcp"}
    (health,) = [a for i, a in lines if i == "HEALTHCHECK"]
    paths = re.findall(r"https?://[^/'\"]+(/[\w/]*)", health)
    assert paths == ["/healthz"] and "/healthz" in app_paths
    assert f"'{HTTP_PORT}'" in health  # the default port when IDNODE_PORT is not set
    copied = [a.split()[0] for i, a in lines if i == "COPY" and not a.startswith("--from")]
    for src in copied:
        assert (ROOT / src).exists(), src
    assert "fast" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for needed in ("pyproject.toml", "README.md", "LICENSE", "registry", "resolver", "promotion_tracker"):
        assert needed not in ignored
    assert ".venv" in ignored and ".git" in ignored


# == settings, ports and paths ====================================================================


def _idnode_vars(path: Path) -> set[str]:
    return set(re.findall(r"\bIDNODE_[A-Z0-9_]+", path.read_text(encoding="utf-8")))


def test_every_idnode_variable_is_a_setting() -> None:
    files = [DEPLOY / "docker-compose.yml", DEPLOY / "Dockerfile", *K8S.glob("*.yaml")]
    used: set[str] = set()
    for path in files:
        unknown = _idnode_vars(path) - SETTINGS
        assert not unknown, f"{path.name}: not settings: {sorted(unknown)}"
        used |= _idnode_vars(path)
    assert {"IDNODE_ADMIN_SECRET", "IDNODE_STORE", "IDNODE_REDIS"} <= used


def test_compose_services_ports_and_mounts() -> None:
    (compose,) = load_yaml(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert {"idnode-1", "idnode-2", "postgres", "redis", "prometheus", "grafana"} <= set(services)
    for name in ("idnode-1", "idnode-2"):
        svc = services[name]
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        env = svc["environment"]
        assert set(env) <= SETTINGS
        for key, raw in env.items():  # the values are valid for their settings
            if "${" not in str(raw):
                load_config(env={key: str(raw)})
        assert int(env["IDNODE_PORT"]) == HTTP_PORT and int(env["IDNODE_NATIVE_PORT"]) == NATIVE_PORT
        assert env["IDNODE_STORE"].startswith("postgresql://") and "@postgres:5432/" in env["IDNODE_STORE"]
        assert env["IDNODE_REDIS"].startswith("redis://redis:6379")
        container_ports = {p.split(":")[-1] for p in svc["ports"]}
        assert {f"{NATIVE_PORT}/udp", f"{NATIVE_PORT}/tcp"} <= container_ports
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
    nginx = (DEPLOY / "nginx/nginx.conf").read_text()
    assert f"idnode-1:{HTTP_PORT}" in nginx and f"idnode-2:{HTTP_PORT}" in nginx


def test_deployments_set_where_clients_reach_them() -> None:
    """HS_SITE must name the deployment's public address (clients following it would otherwise be
    sent to 127.0.0.1), and the node must know its public URL: compose takes both from the operator,
    with no default; the Kubernetes ConfigMap sets both (to documentation values to replace)."""
    (compose,) = load_yaml(DEPLOY / "docker-compose.yml")
    for name in ("idnode-1", "idnode-2"):
        env = compose["services"][name]["environment"]
        for key in ("IDNODE_ADVERTISE_HOST", "IDNODE_PUBLIC_BASE_URL"):
            assert env[key].startswith("${" + key + ":?"), (name, key, env[key])
    (configmap,) = k8s_kind("ConfigMap")
    data = configmap["data"]
    assert load_config(env=dict(data)).advertise_host == data["IDNODE_ADVERTISE_HOST"]
    assert ipaddress.ip_address(data["IDNODE_ADVERTISE_HOST"]).is_global is False  # a placeholder
    assert load_config(env=dict(data)).public_base_url == data["IDNODE_PUBLIC_BASE_URL"].rstrip("/")
    assert data["IDNODE_PUBLIC_BASE_URL"].startswith("https://")


def test_prometheus_scrapes_both_replicas_on_the_metrics_path(app_paths: set[str]) -> None:
    (config,) = load_yaml(DEPLOY / "prometheus/prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "idnode"]
    assert job.get("metrics_path", "/metrics") == "/metrics" and "/metrics" in app_paths
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert sorted(targets) == [f"idnode-1:{HTTP_PORT}", f"idnode-2:{HTTP_PORT}"]
    for rule_file in config.get("rule_files", []):
        assert (DEPLOY / "prometheus" / Path(rule_file).name).is_file()


def test_business_metrics_are_scraped_as_an_auditor(app_paths: set[str]) -> None:
    """/metrics/business needs credentials: its job sends an auditor identity of the compose node's
    prefix, with the secret from a file mounted from a compose secret (no secret in the repository);
    the open job sends none. The dashboard's business series exist only on that path."""
    from urllib.parse import unquote

    from resolver.ops.metrics import BUSINESS_FAMILIES, BUSINESS_PATH, METRICS_PATH

    (config,) = load_yaml(DEPLOY / "prometheus/prometheus.yml")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert "basic_auth" not in jobs["idnode"] and jobs["idnode"].get("metrics_path", METRICS_PATH) == METRICS_PATH
    (business,) = [j for j in jobs.values() if j.get("metrics_path") == BUSINESS_PATH]
    assert BUSINESS_PATH in app_paths
    assert business["static_configs"] == jobs["idnode"]["static_configs"]
    (compose,) = load_yaml(DEPLOY / "docker-compose.yml")
    prefix = compose["services"]["idnode-1"]["environment"]["IDNODE_PREFIX"]
    auth = business["basic_auth"]
    assert re.fullmatch(rf"300:{re.escape(prefix)}/auditor/[a-z0-9-]+", unquote(auth["username"])), auth
    assert "password" not in auth
    secret_file = Path(auth["password_file"])
    assert secret_file.parent == Path("/run/secrets")
    assert secret_file.name in compose["services"]["prometheus"]["secrets"]
    assert set(compose["secrets"][secret_file.name]) == {"environment"}  # from the operator's shell
    used = {name for expr in dashboard_exprs() for name in promql_names(expr)}
    business_used = {n for n in used if n.removesuffix("_total") in BUSINESS_FAMILIES}
    assert {"idnode_registrations_total", "idnode_promoter_award_yuan"} <= business_used


def test_grafana_provisioning_matches_the_dashboard_and_compose() -> None:
    (compose,) = load_yaml(DEPLOY / "docker-compose.yml")
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("."))
    (datasources,) = load_yaml(next((DEPLOY / "grafana/provisioning/datasources").glob("*.yml")))
    uids = {d["uid"] for d in datasources["datasources"]}
    (providers,) = load_yaml(next((DEPLOY / "grafana/provisioning/dashboards").glob("*.yml")))
    assert providers["providers"][0]["options"]["path"] == mounts["./grafana/dashboards"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboard = json.loads((DEPLOY / "grafana/dashboards/idnode.json").read_text())
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids
            assert panel["targets"], panel["title"]
    # Datasource URL points at the compose service.
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"


def test_k8s_manifests(app_paths: set[str]) -> None:
    docs = k8s_docs()
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
    (deployment,) = k8s_kind("Deployment")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["args"][:1] == ["serve"]
    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert ports == {"http": (HTTP_PORT, "TCP"), "handle-tcp": (NATIVE_PORT, "TCP"), "handle-udp": (NATIVE_PORT, "UDP")}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in app_paths and get["port"] in ports
    assert pod["metadata"]["annotations"]["prometheus.io/path"] in app_paths
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == HTTP_PORT
    # Secrets by reference only; settings from the ConfigMap.
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert set(secret_env) == {"IDNODE_ADMIN_SECRET", "IDNODE_STORE", "IDNODE_REDIS"}
    assert not [e for e in container["env"] if "value" in e and "SECRET" in e["name"]]
    assert not k8s_kind("Secret"), "no Secret with values in the repository"
    (configmap,) = k8s_kind("ConfigMap")
    assert container["envFrom"][0]["configMapRef"]["name"] == configmap["metadata"]["name"]
    assert set(configmap["data"]) <= SETTINGS
    load_config(env=dict(configmap["data"]))  # the values are valid too
    assert int(configmap["data"]["IDNODE_PORT"]) == HTTP_PORT
    assert int(configmap["data"]["IDNODE_NATIVE_PORT"]) == NATIVE_PORT
    # Non-root, matching the image's user.
    uid = [a for i, a in dockerfile() if i == "USER"][-1].split(":")[0]
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == uid and pod["spec"]["securityContext"]["runAsNonRoot"]
    # Services select the pods and reach named container ports; TCP 8000, UDP and TCP 2641.
    services = k8s_kind("Service")
    internal = next(s for s in services if s["metadata"]["name"] == "idnode")
    assert {(p["port"], p["protocol"]) for p in internal["spec"]["ports"]} == {
        (HTTP_PORT, "TCP"),
        (NATIVE_PORT, "TCP"),
        (NATIVE_PORT, "UDP"),
    }
    for service in services:
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        for p in service["spec"]["ports"]:
            assert ports[p["targetPort"]] == (p["port"], p["protocol"])
    (hpa,) = k8s_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    (pdb,) = k8s_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file()
    assert {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"} == set(kustomization["resources"])


# == metric names =================================================================================


# Families the dashboard leaves out on purpose, with the reason (the rest each have a panel).
NO_PANEL: dict[str, str] = {}


def exported_families() -> dict[str, str]:
    """Every idnode_* family the node exports, name (without ``_total``) -> type: the metric objects
    registered in prometheus-client's registry once the app's modules are imported (every module
    that counts something is), and the families computed at scrape time (business figures, jobs)."""
    from prometheus_client import REGISTRY

    import resolver.http.app  # noqa: F401  (imports every module that defines a series)
    from resolver.ops import metrics
    from resolver.ops.job_metrics import JobStateCollector

    families = [*REGISTRY.collect()]
    families += metrics.TallyCollector(lambda: None).collect()  # type: ignore[arg-type, return-value]
    families += JobStateCollector(lambda: None).collect()
    return {f.name: f.type for f in families if f.name.startswith("idnode_")}


def known_metric_names() -> set[str]:
    """Every sample name the node can expose (on /metrics or /metrics/business)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
    }
    return {name + suffix for name, kind in exported_families().items() for suffix in suffixes[kind]}


def family_of(sample: str, families: dict[str, str]) -> str:
    for suffix in ("_total", "_bucket", "_sum", "_count", "_created", ""):
        name = sample.removesuffix(suffix) if suffix else sample
        if name in families:
            return name
    raise KeyError(sample)


def promql_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values are not metric names
    return set(re.findall(r"\bidnode_[a-zA-Z0-9_]+", expr))


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/idnode.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    (rules,) = load_yaml(DEPLOY / "prometheus/rules.yml")
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_known_metric_names_look_right() -> None:
    names = known_metric_names()
    assert {"idnode_http_requests_total", "idnode_http_request_duration_seconds_bucket"} <= names
    assert {"idnode_promoter_award_yuan", "idnode_redis_breaker_state"} <= names
    assert "idnode_http_requests_total_total" not in names and "idnode_promoter_award_yuan_total" not in names


def test_dashboard_and_rules_use_existing_metrics() -> None:
    names = known_metric_names()
    used: set[str] = set()
    for expr in dashboard_exprs() + rule_exprs():
        found = promql_names(expr)
        assert found <= names, f"unknown metric(s) {sorted(found - names)} in {expr}"
        used |= found
    # The panels the issue asks for are there.
    for needed in (
        "idnode_http_requests_total",
        "idnode_http_request_duration_seconds_bucket",
        "idnode_cache_requests_total",
        "idnode_registrations_total",
        "idnode_promoter_eligible_enterprises",
        "idnode_promoter_registrations",
        "idnode_promoter_award_yuan",
    ):
        assert needed in used, needed
    assert promql_names('rate(idnode_x_total{route="/idnode_not_a_metric"}[5m])') == {"idnode_x_total"}


def test_every_exported_family_has_a_panel() -> None:
    """Every idnode_* family the code exports is on the dashboard, or in NO_PANEL with its reason;
    the interfaces issue 16 names are among them (tests/resolver/test_interface_metrics.py and
    test_native_metrics.py make each one move)."""
    families = exported_families()
    shown = {family_of(name, families) for expr in dashboard_exprs() for name in promql_names(expr)}
    missing = set(families) - shown - set(NO_PANEL)
    assert not missing, f"families without a panel (add one, or to NO_PANEL with a reason): {sorted(missing)}"
    assert set(NO_PANEL) <= set(families), "NO_PANEL names a family the node does not export"
    for needed in (
        "idnode_native_requests",
        "idnode_native_request_duration_seconds",
        "idnode_native_udp_datagrams",
        "idnode_native_tcp_connections",
        "idnode_native_tcp_connections_refused",
        "idnode_jobs",
        "idnode_jobs_finished",
        "idnode_job_rows",
        "idnode_job_duration_seconds",
        "idnode_web_redirects",
        "idnode_web_landing_pages",
        "idnode_web_error_pages",
        "idnode_gs1_resolutions",
        "idnode_qr_codes",
        "idnode_label_sheets",
        "idnode_labels",
        "idnode_label_sheet_duration_seconds",
    ):
        assert needed in shown, needed


def test_dashboard_route_labels_are_real_routes(app_paths: set[str]) -> None:
    for expr in dashboard_exprs() + rule_exprs():
        for route in re.findall(r'route="([^"]+)"', expr):
            assert route in app_paths, route
