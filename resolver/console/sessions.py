"""Console sessions: aiohttp-session's storage interface, kept in the node's store.

The cookie carries a random id (256 bits); the store keeps only its SHA-256, with the identity, the
session's small mapping (identity, CSRF token, a fingerprint of the key it signed in with — never a
secret key), its creation, when it was last seen and its absolute expiry. So every worker and every
node sharing the store sees the same sessions, and signing out ends a session everywhere: an old
cookie replayed finds nothing. A session ends when unused for ``console_idle_timeout`` seconds or
``console_session_lifetime`` seconds after sign-in, whichever comes first; expired rows are
deleted when next seen and at every sign-in. "Last seen" is written at most once a minute (a page
view is not a store write), so an idle session may end up to a minute early. Signing in always
starts a new session with a new id.

The cookie: HttpOnly, SameSite=Lax, Path=/console, Secure when the request came over TLS (directly
or, from a trusted proxy, with ``X-Forwarded-Proto: https``), Max-Age the session lifetime.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
from collections.abc import Callable

from aiohttp import web
from aiohttp_session import AbstractStorage, Session

from registry.errors import InvalidRequest
from registry.stores.base import HandleStore
from resolver.http.keys import CONFIG_KEY

__all__ = ["COOKIE", "COOKIE_PATH", "ConsoleSessionStorage", "id_hash", "is_secure"]

COOKIE = "idnode_console"
COOKIE_PATH = "/console"
TOUCH_EVERY = 60  # seconds: "last seen" is written at most this often per session
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{32,128}")  # what secrets.token_urlsafe(32) makes; anything else is none
MAX_DATA = 4096  # bytes of a session's mapping as JSON


def id_hash(session_id: str) -> str:
    """What the store keys a session by: the SHA-256 of its id (the id itself is never stored)."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def is_secure(request: web.Request) -> bool:
    """Did the browser reach the node over TLS? Directly, or through a trusted proxy that says so."""
    if request.secure:
        return True
    config = request.app.get(CONFIG_KEY)
    if config is None or not config.trusted_proxies or request.headers.get("X-Forwarded-Proto") != "https":
        return False
    try:
        peer = ipaddress.ip_address((request.remote or "").split("%", 1)[0])
    except ValueError:
        return False
    return any(peer in net for net in config.proxy_networks())


class ConsoleSessionStorage(AbstractStorage):
    """aiohttp-session storage backed by the node's store (see the module docstring)."""

    def __init__(self, store: Callable[[], HandleStore], *, idle: int, lifetime: int, clock: Callable[[], int]) -> None:
        super().__init__(cookie_name=COOKIE, path=COOKIE_PATH, httponly=True, samesite="Lax", max_age=None)
        self._store = store
        self.idle = idle
        self.lifetime = lifetime
        self.clock = clock

    def _empty(self) -> Session:
        return Session(None, data=None, new=True, max_age=None)

    async def load_session(self, request: web.Request) -> Session:
        cookie = self.load_cookie(request)
        if cookie is None or not SESSION_ID.fullmatch(cookie):
            return self._empty()
        key = id_hash(cookie)
        store = self._store()
        row = await store.get_console_session(key)
        if row is None:
            return self._empty()
        now = self.clock()
        try:
            mapping = json.loads(row.data)
        except ValueError:
            mapping = None
        if row.expires_at <= now or row.last_seen + self.idle <= now or not isinstance(mapping, dict):
            await store.delete_console_session(key)
            return self._empty()
        if now - row.last_seen >= TOUCH_EVERY:
            await store.touch_console_session(key, now=now)
        return Session(key, data={"created": row.created_at, "session": mapping}, new=False, max_age=None)

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        store = self._store()
        if session.empty:  # signed out, or ended because its key changed
            if session.identity is not None:
                await store.delete_console_session(session.identity)
            if self.load_cookie(request) is not None:
                response.del_cookie(COOKIE, path=COOKIE_PATH)
            return
        data = json.dumps(dict(session), ensure_ascii=False, separators=(",", ":"))
        if len(data.encode("utf-8")) > MAX_DATA:
            raise InvalidRequest("console session data too large")
        identity = str(session.get("identity", ""))
        now = self.clock()
        if session.identity is not None:
            await store.put_console_session(session.identity, identity, data, now=now, expires_at=now + self.lifetime)
            return
        session_id = secrets.token_urlsafe(32)
        await store.put_console_session(id_hash(session_id), identity, data, now=now, expires_at=now + self.lifetime)
        await store.purge_console_sessions(now=now, idle_before=now - self.idle)
        response.set_cookie(
            COOKIE,
            session_id,
            path=COOKIE_PATH,
            httponly=True,
            samesite="Lax",
            secure=is_secure(request),
            max_age=self.lifetime,
        )

    async def end(self, session: Session) -> None:
        """End ``session`` in the store now (a sign-in replacing it; a sign-out)."""
        if session.identity is not None:
            await self._store().delete_console_session(session.identity)
