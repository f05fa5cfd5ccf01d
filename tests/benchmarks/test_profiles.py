"""Every ``make bench`` profile runs against a real node and does what it says: a few seconds with a few
users (think times scaled down), no failed request, and requests of every kind the profile must make.

A functional check of the profiles (their requests, checks and pass criterion), not a timed one: the
figures are in benchmarks/README.md. One node (embedded SQLite, native UDP on) serves every profile.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.profiles import PROFILES, SeedPlan, check
from benchmarks.run_locust import Node, NodeOptions, run_profile, seed, start_node, stop_node

PLAN = SeedPlan(handles=800, enterprises=4, promoters=2, auditors=3, rich=True, landing=100)
USERS = {"mixed": 24, "scan-campaign": 10, "traceability-app": 5, "enterprise-import": 4, "bureau": 4, "native": 5}
SHORT = {"IDNODE_BENCH_WAIT_SCALE": "0.1", "IDNODE_BENCH_BATCH_ROWS": "500", "IDNODE_BENCH_JOB_ROWS": "500"}


@pytest.fixture(scope="module")
def bench_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Path]]:
    workdir = tmp_path_factory.mktemp("bench")
    secret, run_id = secrets.token_urlsafe(18), secrets.token_hex(3)
    node = start_node(NodeOptions(native=True), workdir, secret, run_id)
    try:
        seed_file = workdir / "seed.json"
        seed_file.write_text(json.dumps(seed(node.base, PLAN, "88.118.8", secret, run_id)))
        yield node, seed_file
    finally:
        stop_node(node.proc)


def test_every_profile_is_tested() -> None:
    assert set(USERS) == set(PROFILES)


@pytest.mark.parametrize("name", list(PROFILES))
def test_profile_runs_clean(name: str, bench_node: tuple[Node, Path], tmp_path: Path) -> None:
    node, seed_file = bench_node
    p = PROFILES[name]
    code, final = run_profile(p, node, seed_file, tmp_path, users=USERS[name], spawn_rate=20, duration=4, env=SHORT)
    made = {row["name"]: row["requests"] for row in final["per_type"]}
    assert check(p, final) == [], f"{name}: {final['errors']}; made {made}"
    assert code == 0
    assert final["total"]["requests"] > 0 and final["total"]["failures"] == 0


def test_the_criterion_fails_on_a_failure_or_a_missing_kind() -> None:
    p = PROFILES["traceability-app"]
    row = {"method": "GET", "requests": 10, "failures": 0}
    clean = {"total": {"requests": 40, "failures": 0}, "per_type": [{**row, "name": k + " x"} for k in p.expected]}
    assert check(p, clean) == []
    failed = {**clean, "total": {"requests": 40, "failures": 1}}
    assert check(p, failed) == ["1 of 40 requests failed"]
    missing = {**clean, "per_type": clean["per_type"][1:]}
    assert check(p, missing) == [f"no request of the kind {p.expected[0]!r} was made"]
