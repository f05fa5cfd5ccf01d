"""What the operator's page modules share: who may open them, and times as pages show them."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from resolver.console.guard import OPERATOR, SignedIn
from resolver.console.signin import require

__all__ = ["me_operator", "when"]


async def me_operator(request: web.Request) -> SignedIn:
    """The signed-in node administrator; anyone else gets 403 (or the sign-in page)."""
    return await require(request, OPERATOR)


def when(ts: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)
