"""The load profiles of ``make bench PROFILE=…``: who calls the node, at what documented load, and
what passes.

Each profile is a Locust file (``benchmarks/profiles/<name>.py``, or ``benchmarks/locustfile.py`` for
``mixed``) plus the declaration below: its load (users, spawn rate, duration), the seed it needs, the
node options it needs, and its pass criterion — no failed request, and at least one request of every
expected kind (a profile that silently stopped exercising a path does not pass). This module imports
no Locust, so ``run_locust.py --help`` and the tests read it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class SeedPlan:
    """What ``run_locust.seed`` puts in the node before the load starts."""

    handles: int = 20_000  # identifiers with a URL value, through the NDJSON batch API
    enterprises: int = 4
    promoters: int = 2
    auditors: int = 1  # the bureau's auditor identities (each its own credentials)
    rich: bool = False  # also an EMAIL (index 2) and a DESC (index 3) value per identifier
    landing: int = 0  # identifiers without a URL (a landing page for people, not a redirect)

    def union(self, other: SeedPlan) -> SeedPlan:
        """The smallest plan that serves both (the tests seed one node for every profile)."""
        return SeedPlan(
            handles=max(self.handles, other.handles),
            enterprises=max(self.enterprises, other.enterprises),
            promoters=max(self.promoters, other.promoters),
            auditors=max(self.auditors, other.auditors),
            rich=self.rich or other.rich,
            landing=max(self.landing, other.landing),
        )


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str  # one line, for --help
    locustfile: Path
    users: int  # the documented load: users (for scan-campaign the peak of a burst)
    spawn_rate: float
    duration: int = 60
    seed: SeedPlan = field(default_factory=SeedPlan)
    native: bool = False  # the node's native UDP/TCP listener on (with no per-address UDP budget)
    expected: tuple[str, ...] = ()  # request names (prefixes) that must each have been made at least once
    env: dict[str, str] = field(default_factory=dict)  # tunables for Locust; the environment overrides them

    @property
    def criterion(self) -> str:
        kinds = ", ".join(f"`{e}`" for e in self.expected)
        return f"0 failed requests at {self.users} users for {self.duration} s, and requests of each kind: {kinds}"


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="mixed",
            summary="the general mix: traceability scans, enterprise writes, the bureau, a Prometheus scrape",
            locustfile=HERE.parent / "locustfile.py",
            users=100,
            spawn_rate=30,
            expected=("resolve known", "resolve unknown", "register", "bureau", "prometheus scrape"),
        ),
        Profile(
            name="scan-campaign",
            summary="a promotion day: bursts of phone scans (302 redirects, landing pages) and QR images",
            locustfile=HERE / "scan_campaign.py",
            users=400,
            spawn_rate=100,
            seed=SeedPlan(handles=20_000, rich=True, landing=2_000),
            expected=("scan → 302", "scan → landing page", "scan unknown", "QR "),
        ),
        Profile(
            name="traceability-app",
            summary="apps resolving over REST: /api/handles/… with type= and index= filters",
            locustfile=HERE / "traceability_app.py",
            users=100,
            spawn_rate=30,
            seed=SeedPlan(handles=20_000, rich=True),
            expected=("resolve whole", "resolve type=", "resolve index=", "resolve unknown"),
        ),
        Profile(
            name="enterprise-import",
            summary="100,000-row batches and import jobs polled to done, while resolving continues",
            locustfile=HERE / "enterprise_import.py",
            users=24,
            spawn_rate=10,
            seed=SeedPlan(handles=20_000, enterprises=4),
            expected=("batch (", "job submit", "job poll", "job to done", "resolve during import"),
            env={"IDNODE_BENCH_BATCH_ROWS": "100000", "IDNODE_BENCH_JOB_ROWS": "20000"},
        ),
        Profile(
            name="bureau",
            summary="month-end at the bureau: tallies (JSON, CSV, XLSX, snapshots), pages, statistics, audit log",
            locustfile=HERE / "bureau.py",
            users=6,
            spawn_rate=1,
            seed=SeedPlan(handles=20_000, enterprises=40, promoters=6, auditors=3),
            expected=(
                "tallies month (JSON)",
                "tallies month (CSV)",
                "tallies month (XLSX)",
                "tallies snapshot",
                "one promoter",
                "page /bureau",
                "resolution statistics",
                "business metrics",
                "audit log",
            ),
        ),
        Profile(
            name="native",
            summary="resolution over the native Handle protocol (UDP): a custom Locust user, the node's codec",
            locustfile=HERE / "native.py",
            users=50,
            spawn_rate=25,
            seed=SeedPlan(handles=20_000, rich=True),
            native=True,
            expected=("resolve", "resolve type=URL", "resolve index=1", "resolve unknown"),
        ),
    )
}


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise SystemExit(f"no profile {name!r}; profiles: {', '.join(PROFILES)}") from None


def check(p: Profile, final: dict[str, Any]) -> list[str]:
    """Why the run does not pass ``p``'s criterion (empty: it passes). ``final`` is the locustfile's
    final_stats.json: ``total``, ``per_type`` rows with ``name``/``requests``/``failures``."""
    problems = []
    if final["total"]["failures"]:
        problems.append(f"{final['total']['failures']} of {final['total']['requests']} requests failed")
    made = [row["name"] for row in final["per_type"] if row["requests"]]
    for kind in p.expected:
        if not any(name.startswith(kind) for name in made):
            problems.append(f"no request of the kind {kind!r} was made")
    return problems
