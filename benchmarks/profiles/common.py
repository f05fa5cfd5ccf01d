"""What every Locust profile shares: the seed ``run_locust.py`` wrote, credentials, a Zipf draw over the
seeded identifiers, the check of a reply, and the final statistics written when Locust quits.

Imported by the Locust files only (it imports Locust). ``IDNODE_BENCH_SEED`` names the seed file
(it holds credentials and stays in run_locust's temporary directory); ``IDNODE_BENCH_STATS`` the
final statistics file.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from locust import between, events

SEED_PATH = os.environ.get("IDNODE_BENCH_SEED", "")
STATS_PATH = os.environ.get("IDNODE_BENCH_STATS", "")
ZIPF_S = float(os.environ.get("IDNODE_BENCH_ZIPF_S", "1.1"))
UNKNOWN_SHARE = float(os.environ.get("IDNODE_BENCH_UNKNOWN", "0.05"))
# Scales every profile's think times (not the mixed profile's): the tests' short runs use 0.1 to make
# enough requests of every kind in a few seconds; 1 is the documented load.
WAIT_SCALE = float(os.environ.get("IDNODE_BENCH_WAIT_SCALE", "1"))


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def think(low: float, high: float) -> Callable[[Any], float]:
    """A user's wait between tasks: uniform in [low, high] seconds, times ``IDNODE_BENCH_WAIT_SCALE``."""
    return between(low * WAIT_SCALE, high * WAIT_SCALE)


def _load_seed() -> dict[str, Any]:
    if not SEED_PATH:
        raise SystemExit("IDNODE_BENCH_SEED is not set: run the load test with `make bench` (benchmarks/run_locust.py)")
    return json.loads(Path(SEED_PATH).read_text(encoding="utf-8"))


SEED = _load_seed()
RUN: str = SEED["run_id"]
HANDLES: list[str] = SEED["handles"]
LANDING: list[str] = SEED.get("landing", [])
ENTERPRISES: list[dict[str, str]] = SEED["enterprises"]
AUDITORS: list[dict[str, str]] = SEED.get("auditors") or [SEED["auditor"]]


class Zipf:
    """Draw from ``items`` by a Zipf law: rank r (1-based) has weight 1 / r**s. The seed lists are
    shuffled, so the popular identifiers are spread over the enterprises."""

    def __init__(self, items: Sequence[str], s: float = ZIPF_S) -> None:
        self.items = items
        self.cumulative = list(itertools.accumulate(1.0 / (r**s) for r in range(1, len(items) + 1)))

    def draw(self, rng: random.Random) -> str:
        return self.items[bisect.bisect_left(self.cumulative, rng.random() * self.cumulative[-1])]


def basic(identity: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{quote(identity, safe='')}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def judge(r: Any, status: int | tuple[int, ...], ok: Callable[[Any], bool] | None = None, why: str = "") -> None:
    """Mark a ``catch_response`` reply: success when its status is one of ``status`` and ``ok(r)``
    holds; a failure naming what was wrong otherwise."""
    wanted = (status,) if isinstance(status, int) else status
    if r.status_code not in wanted:
        r.failure(f"answered {r.status_code} (wanted {'/'.join(map(str, wanted))}): {(r.text or '')[:160]}")
    elif ok is not None and not ok(r):
        r.failure(why or "unexpected reply")
    else:
        r.success()


@events.quitting.add_listener
def _final_stats(environment: Any, **_: Any) -> None:
    """The final numbers per request type (Locust's CSV is rewritten periodically and may miss the
    last second), for run_locust.py's summary and pass criterion."""
    if not STATS_PATH or environment.stats is None:
        return

    def row(entry: Any) -> dict[str, Any]:
        return {
            "method": entry.method or "",
            "name": entry.name,
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "rps": round(entry.total_rps, 1),
            "avg_ms": round(entry.avg_response_time, 2),
            "max_ms": round(entry.max_response_time or 0, 1),
            **{f"p{p}_ms": entry.get_response_time_percentile(p / 100) for p in (50, 95, 99)},
        }

    stats = environment.stats
    body = {
        "per_type": [row(e) for e in sorted(stats.entries.values(), key=lambda e: (e.name, e.method or ""))],
        "total": row(stats.total),
        "errors": [
            {"name": e.name, "error": str(e.error), "occurrences": e.occurrences} for e in stats.errors.values()
        ],
    }
    Path(STATS_PATH).write_text(json.dumps(body, indent=2))
