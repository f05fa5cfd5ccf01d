"""What every ``idnode`` command shares: the settings flags (made once, from :class:`Config`), the
exit codes, and running work on the store as the node administrator.

Admin commands act on the store directly with node-administrator rights: whoever can read the
node's data directory or database already holds them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import getpass
import json
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import click

from registry.audit import set_source
from registry.auth import Caller, Identity
from registry.errors import HandleError, StoreUnavailable
from registry.model import prefix_handle_of
from registry.service import Registry
from registry.stores import open_store
from resolver.config import Config, ConfigError, load_config
from resolver.datadir import prepare_data_dir

T = TypeVar("T")

__all__ = [
    "CACHE",
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_REJECTED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "STORE",
    "Failed",
    "Unreachable",
    "cli_source",
    "emit",
    "json_option",
    "load_settings",
    "node_admin",
    "run_admin",
    "setting_options",
    "settings",
    "warn",
    "warn_renamed",
    "writer_cache",
]

# Exit codes: distinct, the same for every command (README, `idnode --help`).
EXIT_FAILED = 1  # refused or failed: the message says why; nothing (more) was done
EXIT_USAGE = 2  # a usage error: unknown command or flag, a bad value, bad settings (click's own code)
EXIT_REJECTED = 3  # finished, but some rows were rejected (idnode import: they are listed)
EXIT_UNREACHABLE = 4  # the store or the shared cache cannot be reached or used
EXIT_INTERRUPTED = 130  # interrupted (Ctrl-C): idnode import saved its checkpoint and printed how to resume
EXIT_CODES_HELP = """\b
Exit codes:
  0  done
  1  refused or failed (the message says why)
  2  usage error: unknown command or flag, a bad value, bad settings
  3  finished, but some rows were rejected (idnode import)
  4  the store or the shared cache cannot be reached or used
  130  interrupted by Ctrl-C (idnode import prints the command that resumes)
"""

# The settings flags of the commands that use the store, and of those that also tell the shared cache.
STORE = ("store", "data_dir", "prefix")
CACHE = ("redis", "redis_key_prefix", "redis_timeout_ms", "cache_invalidation_wait_ms")


class Failed(click.ClickException):
    exit_code = EXIT_FAILED


class Unreachable(click.ClickException):
    exit_code = EXIT_UNREACHABLE


def warn(message: str) -> None:
    click.echo(f"idnode: warning: {message}", err=True)


def warn_renamed(old: str, new: str, why: str = "") -> None:
    warn(f"{old} is deprecated and goes in the next release: use {new}{why}")


def _flag(f: dataclasses.Field) -> Callable[[Callable[..., Any]], Callable[..., Any]]:  # type: ignore[type-arg]
    name = f.name.replace("_", "-")
    if f.type in (bool, "bool"):
        return click.option(f"--{name}/--no-{name}", f.name, default=None, help=f.metadata["help"])
    kind = int if f.type in (int, "int") else str
    shown = f" [default: {f.default}]" if f.default != "" else ""
    return click.option(f"--{name}", f.name, type=kind, default=None, help=f.metadata["help"] + shown)


def setting_options(names: Sequence[str] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One ``--flag`` per Config field (those in ``names``, or all), with the field's help text:
    the flags, their IDNODE_* variables and the settings file name the same settings everywhere."""
    fields = [f for f in dataclasses.fields(Config) if names is None or f.name in names]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for f in reversed(fields):
            fn = _flag(f)(fn)
        return fn

    return decorate


def settings(*names: str, every: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--config FILE`` and the settings flags ``names`` (``every``: all of them, as ``serve``);
    the command receives ``config``: defaults < file < IDNODE_* variables < flags, as serve reads them."""
    chosen = None if every else names

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        picked = [f.name for f in dataclasses.fields(Config) if chosen is None or f.name in chosen]

        @functools.wraps(fn)
        def command(*args: Any, config_file: str | None, **kwargs: Any) -> Any:
            overrides = {name: kwargs.pop(name) for name in picked}
            return fn(*args, config=load_settings(config_file, overrides), **kwargs)

        command = setting_options(chosen)(command)
        return click.option(
            "--config",
            "config_file",
            type=click.Path(exists=True, dir_okay=False),
            help="TOML settings file (keys as the flags, optionally under [idnode]).",
        )(command)

    return decorate


def load_settings(config_file: str | None, overrides: dict[str, Any]) -> Config:
    try:
        return load_config(config_file, overrides=overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def emit(obj: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(obj, ensure_ascii=False, indent=2))
        return
    rows = obj if isinstance(obj, list) else [obj]
    for row in rows:
        click.echo("  ".join(f"{k}={v}" for k, v in row.items()))


def cli_source() -> str:
    """Where a CLI action comes from, for the audit log."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"idnode CLI, {user}@{socket.gethostname()}"


def node_admin(config: Config) -> Caller:
    handle = prefix_handle_of(config.prefix)
    return Caller(identity=Identity(300, handle, handle.upper()), node_admin=True)


def run_admin(config: Config, work: Callable[[Registry, Caller], Awaitable[T]], *, writes: bool = False) -> T:
    """Run ``work`` as the node administrator on the store. A command that ``writes`` identifier
    records or credentials first connects to the cache the running nodes share (see
    :func:`writer_cache`), so that they drop what it changes."""

    async def go() -> T:
        set_source(cli_source())  # what this command changes is recorded as coming from here
        try:
            prepare_data_dir(config)
        except OSError as exc:
            raise StoreUnavailable(f"cannot use the data directory {config.data_dir}: {exc}") from None
        store = await open_store(config.store_url)
        cache = None
        try:
            cache = await writer_cache(config, store) if writes else None
            registry = Registry(store, config.node_settings())
            if cache is not None:
                registry.add_listener(cache.invalidate)
            try:
                result = await work(registry, node_admin(config))
            finally:
                registry.close()
            if cache is not None and cache.bus is not None and cache.bus.pending:
                warn(
                    f"{cache.bus.pending} change(s) could not be announced to the shared cache: "
                    f"the nodes may serve the old records for up to {config.cache_redis_max_ttl} s"
                )
            return result
        finally:
            if cache is not None:
                await cache.close()
            await store.close()

    try:
        return asyncio.run(go())
    except StoreUnavailable as exc:
        raise Unreachable(exc.message) from None
    except HandleError as exc:
        raise Failed(exc.message) from None


async def writer_cache(config: Config, store: Any) -> Any:
    """Running nodes must hear of what the CLI changes: the Redis tier's invalidations, through the
    ``redis`` setting or, without it, the shared cache the nodes recorded in the store (this
    short-lived process keeps no local tier of its own). A cache that cannot be reached stops the
    command before it writes anything."""
    # Lazy: the Redis cache tiers load only for the commands that write (and `cache show/forget`).
    from redis.exceptions import RedisError

    from resolver.cache.redis_tier import open_redis
    from resolver.cache.shared import FORGET_HINT, SharedCacheError, without_password, writer_cache
    from resolver.cache.tiered import build_cache

    try:
        settings_, shared = await writer_cache(config, store)
    except SharedCacheError as exc:
        raise Unreachable(f"{exc}. Nothing was written.") from None
    if not settings_.redis:
        return None
    client = open_redis(settings_.redis, settings_.redis_timeout_ms / 1000)
    try:
        async with asyncio.timeout(max(1.0, settings_.redis_timeout_ms / 1000)):
            await client.ping()
    except (TimeoutError, RedisError, OSError) as exc:
        if shared is not None:
            where = f"the shared cache {shared.describe()} that the store's nodes recorded"
        else:
            where = f"the Redis cache {without_password(settings_.redis)[0]}"
        reason = f"{type(exc).__name__}: {str(exc).rstrip('.')}"
        raise Unreachable(
            f"cannot reach {where}: {reason}. Nothing was written: the running nodes would "
            "keep serving the old records for up to cache_redis_max_ttl. Run this where that Redis answers, or "
            f"set redis (--redis, IDNODE_REDIS) to the address it has from here; {FORGET_HINT}."
        ) from None
    finally:
        await client.aclose()
    cache = await build_cache(dataclasses.replace(settings_, cache_local_entries=0), store)
    if shared is not None:
        click.echo(
            f"idnode: no redis setting: announcing changes to the shared cache {shared.describe()} "
            "that the store's nodes recorded",
            err=True,
        )
    return cache
