"""Run the node: the aiohttp site(s), TLS, graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from resolver.app import create_app
from resolver.config import Config

__all__ = ["run", "serve"]

log = logging.getLogger("idnode")
SHUTDOWN_GRACE = 30.0


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    return ctx


async def serve(config: Config, *, reuse_port: bool = False, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM or SIGINT; in-flight requests get ``SHUTDOWN_GRACE`` seconds to finish."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=log if config.access_log else None, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    site = web.TCPSite(
        runner, config.host, config.port, ssl_context=_ssl_context(config), reuse_port=reuse_port or None
    )
    await site.start()
    scheme = "https" if config.tls_cert else "http"
    log.info("idnode serving prefix %s on %s://%s:%d", config.prefix, scheme, config.host, config.port)
    print(f"idnode: serving {config.prefix} on {scheme}://{config.host}:{config.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("idnode shutting down")
        await runner.cleanup()


def run(config: Config) -> None:
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(config))
