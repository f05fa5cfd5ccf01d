"""``idnode serve``: run the node (the default command)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys

import click

from registry.errors import HandleError, StoreUnavailable
from resolver.cli.common import Failed, Unreachable, settings
from resolver.config import Config, ConfigError
from resolver.ops.logs import setup_logging

__all__ = ["serve"]


@click.command(short_help="Run the node (the default command).")
@click.option("--get", "get_path", metavar="PATH", help="Run one GET request in-process, print the reply and exit.")
@settings(every=True)
def serve(config: Config, get_path: str | None) -> None:
    """Serve the Handle REST API, the native Handle protocol and the admin API.

    On first start the node creates its prefix handle 0.NA/<prefix>, whose HS_SECKEY at index 300
    is taken from IDNODE_ADMIN_SECRET, or generated and printed once. Once ready it prints where it
    listens, where its data lives and how to stop it.
    """
    setup_logging(config.log_level)
    try:
        if get_path:
            sys.exit(asyncio.run(_get(config, get_path)))
        from resolver.server import run  # lazy: the server stack (routes, native listeners, metrics) only to serve

        run(config)
    except ConfigError as exc:  # found while starting: a report key file that cannot be used, …
        raise Failed(str(exc)) from None
    except StoreUnavailable as exc:  # cannot open the store, or a newer release's schema
        raise Unreachable(exc.message) from None
    except HandleError as exc:
        raise Failed(exc.message) from None


async def _get(config: Config, path: str) -> int:
    # Lazy, as in serve: the admin commands start without the server stack (about 0.4 s of imports).
    from aiohttp.test_utils import TestClient, TestServer

    from resolver.http.app import create_app
    from resolver.ops.banner import STARTUP_KEY, secret_notice

    # A one-off process beside a running node: no native listeners, and the node's HS_SITE left as it is.
    app = create_app(dataclasses.replace(config, native_port=0), publish_site=False)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get(path)
        click.echo(await resp.text())
    generated = app[STARTUP_KEY].generated_secret
    if generated:  # this was the node's first start: the secret is shown here or never
        click.echo(secret_notice(config, generated), err=True)
    return 0 if resp.status < 400 else 1
