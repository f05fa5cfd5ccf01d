"""Run the node: the application with its native listeners, the aiohttp site(s), TLS, workers,
graceful shutdown on SIGTERM/SIGINT.

The application's startup (:func:`resolver.http.app.create_app`) builds the node's parts; this module
binds what listens for it: the native Handle protocol's UDP and TCP listeners (:func:`node_app`, once
the parts are built; a port that cannot be bound only logs a warning) and the HTTP site (:func:`serve`).
HS_SITE on the node's prefix handle is published once the listeners are bound, listing what was.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import shutil
import signal
import ssl
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from registry import offload
from registry.stores.base import HandleStore
from resolver.cache.worker_hub import MAX_SLOTS, WorkerHub
from resolver.config import Config
from resolver.http import hot_path
from resolver.http.app import create_app, node_site
from resolver.http.keys import STATE_KEY
from resolver.http.timeouts import HttpTimeouts, TimedSite
from resolver.native.server import NativeServer, start_native_or_warn
from resolver.ops.banner import STARTUP_KEY, StartupFacts, banner
from resolver.ops.rest_meter import REST

__all__ = ["node_app", "run", "serve"]

log = logging.getLogger("idnode")
SHUTDOWN_GRACE = 30.0


def node_app(
    config: Config,
    store: HandleStore | None = None,
    *,
    clock: Callable[[], int] | None = None,
    publish_site: bool = True,
) -> web.Application:
    """The node as ``idnode serve`` runs it: :func:`create_app`'s application whose startup, once the
    node's parts are built, binds the native UDP/TCP listeners on ``native_port`` (0: none) and
    publishes HS_SITE listing the interfaces that were bound (unless ``publish_site`` is False);
    its cleanup closes them before the parts are taken down. Arguments as for ``create_app``."""
    app = create_app(config, store, clock=clock, publish_site=False)

    async def native_listeners(app: web.Application) -> AsyncIterator[None]:
        state = app[STATE_KEY]
        assert state.native is not None and state.registry is not None, "the node's parts are built first"
        native: NativeServer | None = None
        if config.native_port:
            native = await start_native_or_warn(state.native, config)
        app[STARTUP_KEY].native_bound = native is not None if config.native_port else None  # for the banner
        try:
            site = node_site(config, native=native is not None)
            state.native.set_site(site)
            if publish_site:
                await state.registry.publish_site(site)
        except BaseException:
            if native is not None:
                await native.close()
            raise
        yield
        if native is not None:
            await native.close()

    app.cleanup_ctx.append(native_listeners)  # after create_app's: started last, closed first
    return app


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    return ctx


async def serve(
    config: Config, *, reuse_port: bool = False, ready: asyncio.Event | None = None, announce: bool = True
) -> None:
    """Serve until SIGTERM or SIGINT; in-flight requests get ``SHUTDOWN_GRACE`` seconds to finish.
    With ``reuse_port`` (workers) every process binds the HTTP and native ports (SO_REUSEPORT).
    ``announce``: print the banner once serving (a worker leaves it to its supervisor)."""
    app = node_app(config)
    # Access lines come from resolver.http.access (route templates, request ids), never from aiohttp's logger.
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=SHUTDOWN_GRACE,
        keepalive_timeout=config.http_keepalive_timeout,
        lingering_time=min(10.0, config.http_body_timeout),  # draining a body answered early (401, 413)
    )
    await runner.setup()
    hot_path.install(runner)  # anonymous resolves answered from ready replies
    site = TimedSite(
        runner,
        config.host,
        config.port,
        timeouts=HttpTimeouts(config.http_header_timeout, config.http_body_timeout),
        ssl_context=_ssl_context(config),
        reuse_port=reuse_port or None,
    )
    await site.start()
    settle_heap()
    scheme = "https" if config.tls_cert else "http"
    log.info("idnode serving prefix %s on %s://%s:%d", config.prefix, scheme, config.host, config.port)
    if announce:
        print(banner(config, app[STARTUP_KEY], pid=os.getpid()), flush=True)
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
        REST.flush()  # the hot path's last counts
        offload.shutdown()  # the helper process, if a label sheet or a workbook started one


def settle_heap() -> None:
    """Once started: collect the start-up's garbage, then move every object left (modules, the
    application, routes, templates, catalogues) to the collector's permanent generation. A full
    collection while serving then walks only what came after: in a local-hit benchmark's server
    under load (benchmarks/README.md, issue 15) ~4,500 objects instead of ~120,000, a pause of
    0.7 ms instead of 260-290 ms on the shared VM."""
    gc.collect()
    gc.freeze()


def _install_uvloop() -> None:
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass


def _worker(config: Config, number: int, hub: str = "") -> None:
    """One worker process: its own event loop, app and store connections, the shared port; ``hub``:
    the address of the supervisor's worker hub (:mod:`resolver.cache.worker_hub`), if it runs one."""
    from resolver.cache.worker_hub import HUB_ENV
    from resolver.ops.logs import setup_logging

    if hub:
        os.environ[HUB_ENV] = hub  # read by resolver.cache.tiered.build_cache
    setup_logging(config.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor turns Ctrl-C into SIGTERM
    _install_uvloop()
    asyncio.run(serve(config, reuse_port=True, announce=False))


async def _bootstrap(config: Config) -> StartupFacts:
    """Create the node's prefix handle once, before the workers start, so one secret is printed:
    running the app's startup and cleanup once does it (prefix handle, signing key). It leaves HS_SITE
    to the workers, which publish the interfaces they actually bind."""
    once = dataclasses.replace(config, native_port=0, cache_local_entries=0)  # it resolves nothing
    app = create_app(once, publish_site=False, background=False)
    runner = web.AppRunner(app)
    await runner.setup()
    await runner.cleanup()
    return StartupFacts(generated_secret=app[STARTUP_KEY].generated_secret)


def _supervise(config: Config) -> None:
    """Start ``config.workers`` processes sharing the port (SO_REUSEPORT), restart any that dies,
    and on SIGTERM/SIGINT stop them all gracefully (each finishes its in-flight requests)."""
    import multiprocessing
    import tempfile
    import time

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="idnode-metrics-")
    facts = asyncio.run(_bootstrap(config))
    ctx = multiprocessing.get_context("spawn")
    stopping = False
    hub: WorkerHub | None = None
    tiers = config.cache_local_entries > 0 and config.cache_local_bytes > 0
    if not config.redis and tiers and config.workers <= MAX_SLOTS:
        # Each worker keeps a local tier; writes reach the others through this hub before they are acknowledged.
        hub = WorkerHub(tempfile.mkdtemp(prefix="idnode-hub-"), ack_wait=config.cache_invalidation_wait_ms / 1000)
        hub.start()

    def start(number: int):  # type: ignore[no-untyped-def]
        address = hub.address(number) if hub is not None else ""
        proc = ctx.Process(target=_worker, args=(config, number, address), name=f"idnode-worker-{number}", daemon=False)
        proc.start()
        return proc

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers = {n: start(n) for n in range(config.workers)}
    log.info("idnode supervisor started %d workers", config.workers)
    print(banner(config, facts, pid=os.getpid()), flush=True)
    restarts: list[float] = []
    while not stopping:
        time.sleep(0.2)
        for n, proc in list(workers.items()):
            if proc.is_alive() or stopping:
                continue
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(proc.pid)
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            if len(restarts) > 5 * config.workers:
                log.error("workers keep dying; giving up")
                stopping = True
                break
            log.warning("worker %d (pid %s) exited with %s; restarting", n, proc.pid, proc.exitcode)
            workers[n] = start(n)
    for proc in workers.values():
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_GRACE + 5
    for proc in workers.values():
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
    if hub is not None:
        hub.close()
        shutil.rmtree(os.path.dirname(hub.path), ignore_errors=True)
    log.info("idnode supervisor stopped")


def run(config: Config) -> None:
    if config.workers > 1:
        _supervise(config)
        return
    _install_uvloop()
    asyncio.run(serve(config))
