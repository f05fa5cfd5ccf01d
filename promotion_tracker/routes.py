"""The bureau's HTTP face: tallies (JSON signed, CSV), one promoter's rows, the public key, the page.

Mounted by the resolver app, which supplies how a request's caller is authenticated; this package
knows nothing else of the resolver.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from promotion_tracker.policy import MODES, Policy
from promotion_tracker.report import tally_csv, tally_html, tally_json
from promotion_tracker.signing import REPORT_KEY_INDEX, REPORT_KEY_TYPE, Signer
from promotion_tracker.tally import TallyError, compute_tally, default_period
from registry.auth import Caller
from registry.days import SHANGHAI, parse_day
from registry.errors import HandleNotFound, InvalidRequest, PermissionDenied
from registry.stores.base import HandleStore

__all__ = ["TRACKER_KEY", "TrackerState", "tracker_routes"]


@dataclass
class TrackerState:
    """Filled at startup by the app: the store, the policy in force and the node's signing key."""

    authenticate: Callable[[web.Request], Awaitable[Caller]] | None = None
    store: HandleStore | None = None
    policy: Policy = field(default_factory=Policy)
    signer: Signer | None = None
    node_prefix: str = ""
    clock: Callable[[], int] = field(default=lambda: int(time.time()))


TRACKER_KEY: web.AppKey[TrackerState] = web.AppKey("tracker", TrackerState)
tracker_routes = web.RouteTableDef()


def _state(request: web.Request) -> TrackerState:
    state = request.app[TRACKER_KEY]
    if state.store is None or state.signer is None or state.authenticate is None:
        raise RuntimeError("promotion tracker not started")
    return state


async def _bureau(request: web.Request) -> TrackerState:
    """Only the bureau's auditor identity and node administrators read tallies."""
    state = _state(request)
    assert state.authenticate is not None
    caller = await state.authenticate(request)
    caller.require_authenticated()
    if not (caller.node_admin or caller.role == "auditor"):
        raise PermissionDenied("tallies are for the bureau's auditor identity and node administrators")
    return state


def _date(request: web.Request, name: str, default: dt.date) -> dt.date:
    raw = request.query.get(name)
    if not raw:
        return default
    try:
        return parse_day(raw)
    except ValueError as exc:
        raise InvalidRequest(f"{name}: {exc}") from None


def parse_caps(items: list[str]) -> dict[int, int]:
    """``cap=<promoter id>:<yuan>`` (repeatable): clause 17's cap by the promoter's previous-year
    economic contribution, supplied by the bureau with the request."""
    caps: dict[int, int] = {}
    for item in items:
        pid, sep, yuan = item.partition(":")
        if not sep or not pid.strip().isdigit() or not yuan.strip().isdigit():
            raise InvalidRequest(f"cap must be <promoter id>:<yuan>, got {item!r}")
        caps[int(pid)] = int(yuan)
    return caps


def _as_of(request: web.Request) -> dt.datetime | None:
    raw = request.query.get("as_of")
    if not raw:
        return None
    try:
        t = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"as_of must be an ISO 8601 time, got {raw!r}") from None
    return t.replace(tzinfo=SHANGHAI) if t.tzinfo is None else t


async def _tally(request: web.Request, state: TrackerState, promoter_id: int | None = None):  # type: ignore[no-untyped-def]
    now = dt.datetime.fromtimestamp(state.clock(), dt.UTC)
    default_from, default_to = default_period(now)
    period_from, period_to = _date(request, "from", default_from), _date(request, "to", default_to)
    policy = state.policy
    mode = request.query.get("mode")
    if mode:
        if mode not in MODES:
            raise InvalidRequest(f"mode must be one of {', '.join(MODES)}")
        policy = replace(policy, mode=mode)  # type: ignore[arg-type]
    caps = parse_caps(request.query.getall("cap", []))
    try:
        assert state.store is not None
        tally = await compute_tally(
            state.store,
            period_from,
            period_to,
            _as_of(request),
            policy,
            now=now,
            promoter_id=promoter_id,
            contribution_caps=caps,
        )
    except TallyError as exc:
        raise InvalidRequest(str(exc)) from None
    return tally, now


def _signed(state: TrackerState, body: dict[str, Any]) -> web.Response:
    assert state.signer is not None
    document = state.signer.sign(body)
    return web.Response(
        text=json.dumps(document, ensure_ascii=False, indent=2),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@tracker_routes.get("/api/promotion/tallies")
async def tallies(request: web.Request) -> web.Response:
    """Per promoter over ``[from, to)`` as of ``as_of``; ``format=json`` (signed, default) or ``csv``."""
    state = await _bureau(request)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidRequest("format must be json or csv")
    tally, now = await _tally(request, state)
    if fmt == "csv":
        name = f"tally-{tally.period_from}-{tally.period_to}.csv"
        return web.Response(
            text=tally_csv(tally),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
        )
    return _signed(state, tally_json(tally, node_prefix=state.node_prefix, generated_at=now))


@tracker_routes.get("/api/promotion/tallies/{promoter}")
async def promoter_tally(request: web.Request) -> web.Response:
    """One promoter with its per-enterprise rows (signed JSON)."""
    state = await _bureau(request)
    ref = request.match_info["promoter"]
    assert state.store is not None
    promoter = await state.store.get_promoter(int(ref) if ref.isdigit() else ref.upper())
    if promoter is None:
        raise HandleNotFound(f"unknown promoter {ref!r}")
    tally, now = await _tally(request, state, promoter.id)
    body = tally_json(tally, node_prefix=state.node_prefix, generated_at=now, with_enterprises=True)
    return _signed(state, body)


@tracker_routes.get("/api/promotion/public-key")
async def public_key(request: web.Request) -> web.Response:
    """The node's report-signing key (also published on the node's prefix handle, as PEM text in an
    IDNODE_REPORT_KEY value at index 301)."""
    state = _state(request)
    assert state.signer is not None
    body = {
        "alg": "Ed25519",
        "key_id": state.signer.public_jwk()["kid"],
        "jwk": state.signer.public_jwk(),
        "pem": state.signer.public_pem(),
        "prefix_handle": f"0.NA/{state.node_prefix}",
        "handle_value": {"index": REPORT_KEY_INDEX, "type": REPORT_KEY_TYPE},
    }
    return web.json_response(body)


@tracker_routes.get("/api/promotion/policy")
async def policy(request: web.Request) -> web.Response:
    state = await _bureau(request)
    return web.json_response(state.policy.to_dict())


@tracker_routes.get("/bureau")
async def bureau_page(request: web.Request) -> web.Response:
    """The server-rendered page for the bureau (browsers ask for the Basic credentials)."""
    state = await _bureau(request)
    tally, _ = await _tally(request, state)
    query = {k: v for k, v in request.query.items() if k in ("from", "to", "as_of", "mode")}
    query.setdefault("from", tally.period_from.isoformat())
    query.setdefault("to", tally.period_to.isoformat())
    page = tally_html(tally, node_prefix=state.node_prefix, query=query)
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"})
