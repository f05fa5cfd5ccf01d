"""The bureau's HTTP face: signed tallies (JSON, CSV, XLSX), one promoter's tally, the public key, the
bureau's page and the drill-down page of one promoter.

Mounted by the resolver app, which supplies how a request's caller is authenticated; this package
knows nothing else of the resolver. Every number and time a client sends goes through
:mod:`registry.inputs`. Every output is made from one signed document; a final one is archived in
the store the first time it is made and served from there ever after (:mod:`promotion_tracker.archive`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from promotion_tracker import archive
from promotion_tracker.exports import enterprises_csv, promoters_csv, report_xlsx
from promotion_tracker.pages import bureau_context, error_context, promoter_context
from promotion_tracker.policy import MODES, Policy
from promotion_tracker.report import document_bytes, document_digest, tally_json
from promotion_tracker.signing import REPORT_KEY_INDEX, REPORT_KEY_TYPE, Signer
from promotion_tracker.tally import TallyError, compute_tally, default_period, monthly_counts, snapshot_of
from promotion_tracker.webpages import PageSources, negotiate_locale, render_page
from registry.auth import Caller
from registry.errors import HandleError, HandleNotFound, InvalidRequest, PermissionDenied
from registry.inputs import MAX_ID, parse_instant, parse_uint
from registry.stores.base import HandleStore

__all__ = ["BUREAU_PAGES", "TRACKER_KEY", "TallyQuery", "TrackerState", "parse_caps", "tracker_routes"]

BUREAU_PAGES = PageSources(Path(__file__).parent / "templates", Path(__file__).parent / "locale")
FORMATS = ("json", "csv", "xlsx")
MAX_CAPS = 1000
MAX_PERIOD_DAYS = 3660  # ten years: the drill-down reads one counter query per month
_FIRST_DAY, _LAST_DAY = dt.date(1970, 1, 1), dt.date(9998, 12, 31)
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NO_STORE = {"Cache-Control": "no-store"}


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


# -- what a request asks for -------------------------------------------------------------------
def _day(raw: str | None, name: str, default: dt.date) -> dt.date:
    if not raw:
        return default
    text = raw.strip()
    try:
        if not text.isascii() or len(text) != 10:
            raise ValueError
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a date written YYYY-MM-DD, got {raw[:40]!r}") from None
    if not _FIRST_DAY <= day <= _LAST_DAY:
        raise InvalidRequest(f"{name} must lie between 1970-01-01 and 9998-12-31")
    return day


_ZONED = re.compile(r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$")


def parse_beijing_instant(raw: str, what: str = "as_of") -> dt.datetime:
    """An ISO 8601 time; without a zone it is Beijing time (UTC+8), as the bureau enters it. Range
    and format as :func:`registry.inputs.parse_instant`."""
    text = raw.strip()
    if text.isascii() and len(text) <= 32:
        if len(text) == 10:  # a date alone: midnight in Beijing
            text += "T00:00:00+08:00"
        elif not _ZONED.search(text):
            text += "+08:00"
    return parse_instant(text, what)


def parse_caps(items: list[str]) -> dict[int, int]:
    """``cap=<promoter id>:<yuan>`` (repeatable, or several in one value separated by commas or
    spaces): clause 17's cap by the promoter's previous-year economic contribution, supplied by the
    bureau with the request. Empty values are ignored (an empty form field)."""
    caps: dict[int, int] = {}
    for item in items:
        for part in re.split(r"[,\s，；;]+", item.strip()):
            if not part:
                continue
            pid, sep, yuan = part.partition(":")
            if not sep:
                raise InvalidRequest(f"cap must be <promoter id>:<yuan>, got {part[:40]!r}")
            caps[parse_uint(pid, "cap promoter id", minimum=1)] = parse_uint(yuan, "cap yuan")
            if len(caps) > MAX_CAPS:
                raise InvalidRequest(f"at most {MAX_CAPS} caps per request")
    return caps


@dataclass(frozen=True)
class TallyQuery:
    period_from: dt.date
    period_to: dt.date
    as_of: dt.datetime | None
    as_of_text: str  # as the client wrote it ("" for a live tally)
    mode: str | None
    caps: dict[int, int]

    def params(self) -> dict[str, Any]:
        """The query that asks for the same report (the page's links and form)."""
        return {
            "from": self.period_from.isoformat(),
            "to": self.period_to.isoformat(),
            "as_of": self.as_of_text,
            "mode": self.mode or "",
            "cap": [f"{k}:{v}" for k, v in sorted(self.caps.items())],
        }


def parse_query(request: web.Request, now: dt.datetime) -> TallyQuery:
    q = request.query
    default_from, default_to = default_period(now)
    period_from, period_to = _day(q.get("from"), "from", default_from), _day(q.get("to"), "to", default_to)
    if period_to <= period_from:
        raise InvalidRequest(f"the period is empty: to ({period_to}) must be after from ({period_from})")
    if (period_to - period_from).days > MAX_PERIOD_DAYS:
        raise InvalidRequest("the period may span at most ten years")
    raw_as_of = (q.get("as_of") or "").strip()
    as_of = parse_beijing_instant(raw_as_of) if raw_as_of else None
    mode = q.get("mode") or None
    if mode is not None and mode not in MODES:
        raise InvalidRequest(f"mode must be one of {', '.join(MODES)}")
    caps = parse_caps(q.getall("cap", []))
    return TallyQuery(period_from, period_to, as_of, raw_as_of, mode, caps)


def _format(request: web.Request) -> str:
    fmt = request.query.get("format", "json")
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}")
    return fmt


async def _promoter_id(state: TrackerState, ref: str) -> int:
    """A promoter named by id or unified social credit code."""
    assert state.store is not None
    text = ref
    if text.isascii() and text.isalnum() and len(text) == 18:  # a credit code (it may be all digits)
        promoter = await state.store.get_promoter(text.upper())
        if promoter is None and text.isdigit():
            promoter = await state.store.get_promoter(parse_uint(text, "promoter id", minimum=1, maximum=MAX_ID))
    elif text.isascii() and text.isdigit():
        promoter = await state.store.get_promoter(parse_uint(text, "promoter id", minimum=1, maximum=MAX_ID))
    else:
        raise InvalidRequest("a promoter is named by its id or its 18-character unified social credit code")
    if promoter is None:
        raise HandleNotFound(f"unknown promoter {text!r}")
    return promoter.id


@dataclass(frozen=True)
class Report:
    data: bytes  # the signed document as served
    document: dict[str, Any]
    digest: str
    query: TallyQuery


async def _report(request: web.Request, state: TrackerState, promoter_id: int | None = None) -> Report:
    """The signed document for the request: from the archive when final and made before, else made
    now (and archived when final)."""
    assert state.store is not None and state.signer is not None
    now = dt.datetime.fromtimestamp(state.clock(), dt.UTC)
    query = parse_query(request, now)
    policy = replace(state.policy, mode=query.mode) if query.mode else state.policy  # type: ignore[arg-type]
    snapshot, final = snapshot_of(query.as_of, now)
    key = archive.key_of(query.period_from, query.period_to, snapshot, policy.mode, query.caps, promoter_id)

    async def make() -> bytes:
        assert state.store is not None and state.signer is not None
        try:
            tally = await compute_tally(
                state.store,
                query.period_from,
                query.period_to,
                query.as_of,
                policy,
                now=now,
                promoter_id=promoter_id,
                contribution_caps=query.caps,
            )
        except TallyError as exc:
            raise InvalidRequest(str(exc)) from None
        if promoter_id is not None and not tally.promoters:
            raise HandleNotFound(f"promoter {promoter_id} did not exist at the snapshot")
        monthly = await monthly_counts(state.store, tally) if promoter_id is not None else None
        body = tally_json(tally, node_prefix=state.node_prefix, generated_at=now, monthly=monthly)
        return document_bytes(state.signer.sign(body))

    data = await archive.final_or_new(state.store, key, make) if final else await make()
    return Report(data, json.loads(data), document_digest(data), query)


def _filename(report: Report, promoter_id: int | None, ext: str) -> str:
    r = report.document["report"]
    snap = r["as_of"].replace(":", "").replace("-", "")
    who = f"promoter-{promoter_id}-" if promoter_id is not None else ""
    return f"tally-{who}{r['period']['from']}-{r['period']['to']}-{snap}.{ext}"


def _export(request: web.Request, report: Report, promoter_id: int | None) -> web.Response:
    fmt = _format(request)
    lang = "en" if negotiate_locale(request) == "en" else "zh"
    headers = {**NO_STORE, "X-Report-SHA256": report.digest}
    if fmt == "json":
        return web.Response(body=report.data, content_type="application/json", charset="utf-8", headers=headers)
    if fmt == "csv":
        make_csv = enterprises_csv if promoter_id is not None else promoters_csv
        body, ctype = make_csv(report.document, report.digest, lang=lang), "text/csv"
    else:
        body, ctype = report_xlsx(report.document, report.digest, lang=lang), XLSX_TYPE
    headers["Content-Disposition"] = f'attachment; filename="{_filename(report, promoter_id, fmt)}"'
    headers["Vary"] = "Accept-Language, Cookie"
    return web.Response(body=body, content_type=ctype, charset="utf-8" if fmt == "csv" else None, headers=headers)


@tracker_routes.get("/api/promotion/tallies")
async def tallies(request: web.Request) -> web.Response:
    """Per promoter over ``[from, to)`` as of ``as_of``: ``format=json`` (signed, default), ``csv`` or
    ``xlsx``."""
    state = await _bureau(request)
    _format(request)
    return _export(request, await _report(request, state), None)


@tracker_routes.get("/api/promotion/tallies/{promoter}")
async def promoter_tally(request: web.Request) -> web.Response:
    """One promoter with its enterprises and registrations per month: JSON (signed), CSV or XLSX."""
    state = await _bureau(request)
    _format(request)
    promoter_id = await _promoter_id(state, request.match_info["promoter"])
    return _export(request, await _report(request, state, promoter_id), promoter_id)


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


def _page_error(request: web.Request, state: TrackerState, exc: HandleError, status: int) -> web.Response:
    now = dt.datetime.fromtimestamp(state.clock(), dt.UTC)
    context = error_context(request, exc.message, status, default_period(now))
    return render_page(request, "bureau/error.html", context, status=status, headers=NO_STORE)


@tracker_routes.get("/bureau")
async def bureau_page(request: web.Request) -> web.Response:
    """The bureau's page: the form, the snapshot, the rule, every promoter's progress and award."""
    state = await _bureau(request)
    try:
        report = await _report(request, state)
    except InvalidRequest as exc:
        return _page_error(request, state, exc, 400)
    context = bureau_context(report.document, report.digest, report.query, negotiate_locale(request))
    return render_page(request, "bureau/tally.html", context, headers=NO_STORE)


@tracker_routes.get("/bureau/promoters/{promoter}")
async def promoter_page(request: web.Request) -> web.Response:
    """One promoter: every enterprise and the registrations per month as a chart."""
    state = await _bureau(request)
    try:
        promoter_id = await _promoter_id(state, request.match_info["promoter"])
        report = await _report(request, state, promoter_id)
    except InvalidRequest as exc:
        return _page_error(request, state, exc, 400)
    except HandleNotFound as exc:
        return _page_error(request, state, exc, 404)
    context = promoter_context(report.document, report.digest, report.query, promoter_id, negotiate_locale(request))
    return render_page(request, "bureau/promoter.html", context, headers=NO_STORE)
