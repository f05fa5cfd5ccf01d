"""The console assembled: :func:`setup_console` (called once by ``resolver.http.app.create_app``) adds
the routes of every page module (sign-in, the enterprise's pages, the operator's) and the one
middleware of :mod:`resolver.console.site`. Kept apart from ``site`` so the page modules, which
import ``site``, are imported by nothing but this module.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp_session import session_middleware

from registry.errors import ServerError
from registry.stores.base import HandleStore
from resolver.console.dashboard import dashboard_routes
from resolver.console.enterprise import enterprise_routes
from resolver.console.imports import import_routes
from resolver.console.labels import console_label_routes
from resolver.console.operator import operator_routes
from resolver.console.operator_audit import audit_routes
from resolver.console.operator_status import status_routes
from resolver.console.operator_templates import template_routes
from resolver.console.scripts import script_routes
from resolver.console.search import search_routes
from resolver.console.sessions import ConsoleSessionStorage
from resolver.console.signin import signin_routes
from resolver.console.site import CONSOLE_KEY, ConsoleState, clock_now, console_pages
from resolver.http.keys import CONFIG_KEY, STATE_KEY
from resolver.ops.recent_errors import install as keep_recent_errors


def setup_console(app: web.Application, *, clock: Callable[[], int] | None = None) -> None:
    """Add the console's routes and its middleware to ``app`` (before it starts). The page templates
    and catalogues are :data:`CONSOLE_PAGES`, passed to ``setup_pages`` with the others'."""

    config = app[CONFIG_KEY]

    def store() -> HandleStore:
        registry = app[STATE_KEY].registry
        if registry is None:
            raise ServerError("node not started")
        return registry.store

    storage = ConsoleSessionStorage(
        store,
        idle=config.console_idle_timeout,
        lifetime=config.console_session_lifetime,
        clock=clock or clock_now,
    )
    app[CONSOLE_KEY] = ConsoleState(storage, session_middleware(storage), clock or clock_now)
    app.router.add_routes(signin_routes)
    app.router.add_routes(enterprise_routes)
    app.router.add_routes(dashboard_routes)
    app.router.add_routes(import_routes)
    app.router.add_routes(script_routes)  # the one script: upload progress, a job's live counts
    app.router.add_routes(search_routes)
    app.router.add_routes(console_label_routes)
    app.router.add_routes(operator_routes)
    app.router.add_routes(template_routes)  # the operator's: node templates
    app.router.add_routes(audit_routes)  # the operator's: the audit log
    app.router.add_routes(status_routes)  # the operator's: the node's status
    keep_recent_errors()  # the status page's recent warnings and errors
    app.middlewares.append(console_pages)
