"""The ``idnode`` command line: ``serve`` (the default) and the operator's admin commands.

Admin commands act on the store directly with node-administrator rights: whoever can read the
node's data directory or database already holds them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from promotion_tracker.policy import Policy, PolicyError
from promotion_tracker.report import document_bytes, document_digest, signature_fingerprint, tally_json
from promotion_tracker.signing import SigningKeyError, VerifyError, node_signer, verify_document
from promotion_tracker.tally import TallyError, compute_tally, default_period
from registry.auth import Caller, Identity
from registry.days import parse_day
from registry.errors import HandleError, InvalidRequest
from registry.importer import import_file
from registry.model import normalise_prefix, prefix_handle_of
from registry.service import Registry
from registry.stores import open_store
from registry.templates import parse_version
from registry.views import enterprise_json, promoter_json
from resolver.config import Config, ConfigError, load_config
from resolver.datadir import prepare_data_dir
from resolver.ops.logs import setup_logging

T = TypeVar("T")

__all__ = ["main"]


def _serve_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One ``--flag`` per Config field, with the field's help text: the settings have one source."""
    for f in reversed(dataclasses.fields(Config)):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            option = click.option(
                f"{flag}/--no-{f.name.replace('_', '-')}", f.name, default=None, help=f.metadata["help"]
            )
        else:
            kind = int if f.type in (int, "int") else str
            option = click.option(
                flag, f.name, type=kind, default=None, help=f.metadata["help"] + f" [default: {f.default!r}]"
            )
        fn = option(fn)
    return fn


config_option = click.option(
    "--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="TOML settings file."
)


def _load(config_file: str | None, **overrides: Any) -> Config:
    try:
        return load_config(config_file, overrides=overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


class DefaultGroup(click.Group):
    """``idnode`` alone, or ``idnode --port 9000``, means ``idnode serve …``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0].startswith("-") and args[0] not in ("--help", "-h", "--version")):
            args = ["serve", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="idnode")
def main() -> None:
    """idnode: an industrial-internet identifier resolution secondary node (Handle System style).

    Run without a command to serve on the embedded defaults (SQLite under ./data, 127.0.0.1:8000).
    Settings come from defaults < --config FILE < IDNODE_* environment variables < flags.
    """


@main.command()
@config_option
@_serve_options
@click.option("--get", "get_path", metavar="PATH", help="Run one GET request in-process, print the reply and exit.")
def serve(config_file: str | None, get_path: str | None, **overrides: Any) -> None:
    """Serve the Handle REST API and the admin API.

    On first start the node creates its prefix handle 0.NA/<prefix>, whose HS_SECKEY at index 300
    is taken from IDNODE_ADMIN_SECRET, or generated and printed once.
    """
    config = _load(config_file, **overrides)
    setup_logging(config.log_level)
    if get_path:
        sys.exit(asyncio.run(_get(config, get_path)))
    from resolver.server import run  # lazy: the server stack (routes, native listeners, metrics) only to serve

    try:
        run(config)
    except ConfigError as exc:  # found while starting: a report key file that cannot be used, …
        raise click.ClickException(str(exc)) from None


async def _get(config: Config, path: str) -> int:
    # Lazy, as in serve: the admin commands start without the server stack (about 0.4 s of imports).
    from aiohttp.test_utils import TestClient, TestServer

    from resolver.http.app import create_app

    # A one-off process beside a running node: no native listeners, and the node's HS_SITE left as it is.
    app = create_app(dataclasses.replace(config, native_port=0), publish_site=False)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get(path)
        click.echo(await resp.text())
        return 0 if resp.status < 400 else 1


# -- admin commands ------------------------------------------------------------------------------
def _admin(
    config_file: str | None,
    work: Callable[[Registry, Caller], Awaitable[T]],
    *,
    writes: bool = True,
    **overrides: Any,
) -> T:
    """Run ``work`` as the node administrator on the store. A command that ``writes`` first
    connects to the cache the running nodes share (see :func:`_writer_cache`)."""
    config = _load(config_file, **overrides)

    async def go() -> T:
        prepare_data_dir(config)
        store = await open_store(config.store_url)
        cache = None
        try:
            cache = await _writer_cache(config, store) if writes else None
            registry = Registry(store, config.node_settings())
            if cache is not None:
                registry.add_listener(cache.invalidate)
            handle = prefix_handle_of(config.prefix)
            caller = Caller(identity=Identity(300, handle, handle.upper()), node_admin=True)
            result = await work(registry, caller)
            if cache is not None and cache.bus is not None and cache.bus.pending:
                click.echo(
                    f"idnode: warning: {cache.bus.pending} change(s) could not be announced to the shared cache: "
                    f"the nodes may serve the old records for up to {config.cache_redis_max_ttl} s",
                    err=True,
                )
            return result
        finally:
            if cache is not None:
                await cache.close()
            await store.close()

    try:
        return asyncio.run(go())
    except HandleError as exc:
        raise click.ClickException(exc.message) from None


async def _writer_cache(config: Config, store: Any) -> Any:
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
        settings, shared = await writer_cache(config, store)
    except SharedCacheError as exc:
        raise click.ClickException(f"{exc}. Nothing was written.") from None
    if not settings.redis:
        return None
    client = open_redis(settings.redis, settings.redis_timeout_ms / 1000)
    try:
        async with asyncio.timeout(max(1.0, settings.redis_timeout_ms / 1000)):
            await client.ping()
    except (TimeoutError, RedisError, OSError) as exc:
        if shared is not None:
            where = f"the shared cache {shared.describe()} that the store's nodes recorded"
        else:
            where = f"the Redis cache {without_password(settings.redis)[0]}"
        reason = f"{type(exc).__name__}: {str(exc).rstrip('.')}"
        raise click.ClickException(
            f"cannot reach {where}: {reason}. Nothing was written: the running nodes would "
            "keep serving the old records for up to cache_redis_max_ttl. Run this where that Redis answers, or "
            f"set redis (IDNODE_REDIS) to the address it has from here; {FORGET_HINT}."
        ) from None
    finally:
        await client.aclose()
    cache = await build_cache(dataclasses.replace(settings, cache_local_entries=0), store)
    if shared is not None:
        click.echo(
            f"idnode: no redis setting: announcing changes to the shared cache {shared.describe()} "
            "that the store's nodes recorded",
            err=True,
        )
    return cache


store_options = [
    config_option,
    click.option("--store", default=None, help="Store URL (default: from the settings)."),
    click.option("--prefix", default=None, help="Node prefix (default: from the settings)."),
    click.option("--data-dir", default=None, help="Data directory (default: from the settings)."),
]


def _with_store(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(store_options):
        fn = option(fn)
    return fn


def _emit(obj: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(obj, ensure_ascii=False, indent=2))
        return
    rows = obj if isinstance(obj, list) else [obj]
    for row in rows:
        click.echo("  ".join(f"{k}={v}" for k, v in row.items()))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@main.group()
def promoter() -> None:
    """Promoters (推广企业/机构) under clause 8."""


@promoter.command("add")
@_with_store
@click.option("--name", required=True, help="Legal name.")
@click.option("--uscc", required=True, help="Unified social credit code (统一社会信用代码).")
@json_option
def promoter_add(config_file, store, prefix, data_dir, name, uscc, as_json) -> None:  # type: ignore[no-untyped-def]
    """Register a promoter."""
    p = _admin(config_file, lambda r, c: r.add_promoter(c, name, uscc), store=store, prefix=prefix, data_dir=data_dir)
    _emit(promoter_json(p), as_json)


@promoter.command("list")
@_with_store
@json_option
def promoter_list(config_file, store, prefix, data_dir, as_json) -> None:  # type: ignore[no-untyped-def]
    """List promoters."""
    rows = _admin(
        config_file, lambda r, c: r.store.list_promoters(), writes=False, store=store, prefix=prefix, data_dir=data_dir
    )
    _emit([promoter_json(p) for p in rows], as_json)


@main.group()
def enterprise() -> None:
    """Application enterprises (推广应用企业) and their prefixes."""


@enterprise.command("add")
@_with_store
@click.option("--name", required=True, help="Legal name.")
@click.option("--uscc", required=True, help="Unified social credit code (统一社会信用代码).")
@click.option("--promoter", "promoter_ref", required=True, help="Promoter id or credit code.")
@click.option("--enterprise-prefix", default=None, help="Prefix to allocate (default: the next free one).")
@json_option
def enterprise_add(config_file, store, prefix, data_dir, name, uscc, promoter_ref, enterprise_prefix, as_json):  # type: ignore[no-untyped-def]
    """Onboard an enterprise: allocate its prefix and print its admin identity and secret (once)."""
    ent, secret = _admin(
        config_file,
        lambda r, c: r.add_enterprise(c, name, uscc, promoter_ref, enterprise_prefix),
        store=store,
        prefix=prefix,
        data_dir=data_dir,
    )
    _emit({**enterprise_json(ent), "secret": secret}, as_json)


@enterprise.command("list")
@_with_store
@json_option
def enterprise_list(config_file, store, prefix, data_dir, as_json) -> None:  # type: ignore[no-untyped-def]
    """List enterprises with their prefixes, status and current promoter."""
    rows = _admin(
        config_file,
        lambda r, c: r.store.list_enterprises(),
        writes=False,
        store=store,
        prefix=prefix,
        data_dir=data_dir,
    )
    _emit([enterprise_json(e) for e in rows], as_json)


@enterprise.command("move")
@_with_store
@click.argument("enterprise_ref")
@click.option("--promoter", "promoter_ref", required=True, help="The new promoter (id or credit code).")
@json_option
def enterprise_move(config_file, store, prefix, data_dir, enterprise_ref, promoter_ref, as_json):  # type: ignore[no-untyped-def]
    """Attribute ENTERPRISE_REF (id, prefix or credit code) to another promoter from now on."""
    ent = _admin(
        config_file,
        lambda r, c: r.move_enterprise(c, enterprise_ref, promoter_ref),
        store=store,
        prefix=prefix,
        data_dir=data_dir,
    )
    _emit(enterprise_json(ent), as_json)


def _status_command(command_name: str, status: str, doc: str) -> None:
    @enterprise.command(command_name, help=doc)
    @_with_store
    @click.argument("enterprise_ref")
    @json_option
    def command(config_file, store, prefix, data_dir, enterprise_ref, as_json):  # type: ignore[no-untyped-def]
        ent = _admin(
            config_file,
            lambda r, c: r.set_enterprise_status(c, enterprise_ref, status),
            store=store,
            prefix=prefix,
            data_dir=data_dir,
        )
        _emit(enterprise_json(ent), as_json)


_status_command("disable", "disabled", "Disable an enterprise: its writes are refused, its identifiers still resolve.")
_status_command("enable", "active", "Re-enable a disabled enterprise.")


@main.group("auditor")
def auditor() -> None:
    """The bureau's read-only identities."""


@auditor.command("add")
@_with_store
@click.option("--name", required=True, help="Short name: a-z, 0-9 and '-'.")
def auditor_add(config_file, store, prefix, data_dir, name) -> None:  # type: ignore[no-untyped-def]
    """Create 300:<prefix>/auditor/NAME and print its secret key (once)."""
    identity, secret = _admin(
        config_file, lambda r, c: r.add_auditor(c, name), store=store, prefix=prefix, data_dir=data_dir
    )
    click.echo(f"identity={identity}  secret={secret}")


@auditor.command("list")
@_with_store
@json_option
def auditor_list(config_file, store, prefix, data_dir, as_json) -> None:  # type: ignore[no-untyped-def]
    """List the bureau's identities in force."""
    rows = _admin(config_file, lambda r, c: r.list_auditors(c), store=store, prefix=prefix, data_dir=data_dir)
    created = (dt.datetime.fromtimestamp(a.created_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for a in rows)
    _emit([{"name": a.name, "identity": a.identity, "created": c} for a, c in zip(rows, created, strict=True)], as_json)


@auditor.command("revoke")
@_with_store
@click.argument("name")
def auditor_revoke(config_file, store, prefix, data_dir, name) -> None:  # type: ignore[no-untyped-def]
    """Revoke 300:<prefix>/auditor/NAME: its credentials are refused from the next request on."""
    identity = _admin(
        config_file, lambda r, c: r.revoke_auditor(c, name), store=store, prefix=prefix, data_dir=data_dir
    )
    click.echo(f"revoked {identity}")


@main.group("cache")
def cache_group() -> None:
    """The Redis cache the store's nodes share, as `idnode serve --redis` records it in the store.

    Commands that write, and nodes started without a redis setting, use the recorded cache so that
    the running nodes drop what they change."""


@cache_group.command("show")
@_with_store
@json_option
def cache_show(config_file, store, prefix, data_dir, as_json) -> None:  # type: ignore[no-untyped-def]
    """Print the shared cache recorded in the store."""
    from resolver.cache.shared import recorded  # lazy: the Redis cache tiers, as in _writer_cache

    shared = _admin(config_file, lambda r, c: recorded(r.store), writes=False, store=store, data_dir=data_dir)
    if shared is None:
        click.echo("no shared cache recorded: writers without a redis setting tell no cache")
        return
    _emit(dataclasses.asdict(shared), as_json)


@cache_group.command("forget")
@_with_store
def cache_forget(config_file, store, prefix, data_dir) -> None:  # type: ignore[no-untyped-def]
    """Forget the recorded cache, once no node uses that Redis any more (a node started with a
    redis setting records its own again)."""
    from resolver.cache.shared import forget_shared_cache as forget  # lazy: as in cache show

    before = _admin(config_file, lambda r, c: forget(r.store), writes=False, store=store, data_dir=data_dir)
    click.echo(f"forgot {before.describe()}" if before else "no shared cache was recorded")


@main.group("tally", invoke_without_command=True)
@_with_store
@click.option("--from", "period_from", metavar="YYYY-MM-DD", help="First day of the period (Asia/Shanghai).")
@click.option("--to", "period_to", metavar="YYYY-MM-DD", help="Day after the last day of the period.")
@click.option(
    "--as-of",
    "as_of",
    metavar="TIME",
    help="Snapshot time, ISO 8601, rounded down to the hour (default: live, everything so far).",
)
@click.option("--mode", type=click.Choice(["per_enterprise", "pooled"]), help="Reading of clause 8 (default: policy).")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False), help="Policy file (TOML/JSON).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option(
    "--cap",
    "caps",
    multiple=True,
    metavar="PROMOTER:YUAN",
    help="Clause-17 cap: the promoter's previous-year economic contribution (repeatable).",
)
@click.pass_context
def tally(ctx, config_file, store, prefix, data_dir, period_from, period_to, as_of, mode, policy_file, fmt, caps):  # type: ignore[no-untyped-def]
    """Clause-8 tally per promoter for [--from, --to) as of --as-of. JSON output is signed with the
    node's key; `idnode tally verify FILE` checks a saved report."""
    if ctx.invoked_subcommand is not None:
        return
    # Lazy: the bureau's HTTP pages (where the report's parsers live) and openpyxl only for the tally.
    from promotion_tracker.exports import promoters_csv
    from promotion_tracker.routes import parse_beijing_instant, parse_caps

    config = _load(config_file, store=store, prefix=prefix, data_dir=data_dir)
    now = dt.datetime.now(dt.UTC)
    default_from, default_to = default_period(now)
    try:
        start = parse_day(period_from) if period_from else default_from
        end = parse_day(period_to) if period_to else default_to
        snapshot = parse_beijing_instant(as_of, "--as-of") if as_of else None
        policy = (
            Policy.from_file(policy_file or config.policy_file) if (policy_file or config.policy_file) else Policy()
        )
        if mode:
            policy = dataclasses.replace(policy, mode=mode)
    except (ValueError, PolicyError) as exc:
        raise click.UsageError(str(exc)) from None
    except InvalidRequest as exc:
        raise click.UsageError(exc.message) from None
    try:
        cap_map = parse_caps(list(caps))
    except InvalidRequest as exc:
        raise click.UsageError(exc.message) from None

    async def work(registry: Registry, caller: Caller):  # type: ignore[no-untyped-def]
        result = await compute_tally(registry.store, start, end, snapshot, policy, now=now, contribution_caps=cap_map)
        signer = await node_signer(registry.store, config.report_key_file or None) if fmt in ("json", "csv") else None
        return result, signer

    try:
        result, signer = _admin(config_file, work, writes=False, store=store, prefix=prefix, data_dir=data_dir)
    except TallyError as exc:
        raise click.UsageError(str(exc)) from None
    except SigningKeyError as exc:
        raise click.ClickException(str(exc)) from None
    if fmt in ("json", "csv"):
        document = signer.sign(tally_json(result, node_prefix=config.prefix, generated_at=now))
        data = document_bytes(document)
        if fmt == "json":
            click.echo(data.decode("utf-8"), nl=False)
        else:  # the CSV names the digest of the signed JSON it was made from (printed on stderr)
            click.echo(f"signed JSON SHA-256 {document_digest(data)}", err=True)
            sys.stdout.buffer.write(promoters_csv(document, document_digest(data)))
            sys.stdout.flush()
    else:
        live = "" if result.final else " (live, not final)"
        click.echo(
            f"period [{result.period_from}, {result.period_to}) as of {result.as_of:%Y-%m-%dT%H:%MZ}{live}, "
            f"reading {result.policy.mode}"
        )
        click.echo(f"{'promoter':<32} {'ent.':>5} {'elig.':>5} {'registrations':>13} {'incr.':>5} {'award CNY':>11}")
        for pt in result.promoters:
            a = pt.award
            click.echo(
                f"{pt.promoter.name[:32]:<32} {len(pt.enterprises):>5} {a.eligible_enterprises:>5} "
                f"{a.total_registrations:>13,} {a.increment_enterprises:>5} {a.award_yuan:>11,}"
            )
            click.echo(f"    {a.reason}")


@tally.command("verify")
@click.argument("file", type=click.File("rb"))
@click.option("--public-key", "public_key", type=click.File("r"), help="The node's public key (PEM) to trust.")
def tally_verify(file, public_key) -> None:  # type: ignore[no-untyped-def]
    """Check the signature of a saved JSON report (FILE, or - for standard input)."""
    try:
        raw = file.read()
        document = json.loads(raw.decode("utf-8"))
        kid = verify_document(document, public_key.read() if public_key else None)
    except (ValueError, UnicodeDecodeError) as exc:
        click.echo(f"INVALID: {exc}", err=True)
        sys.exit(1)
    except VerifyError as exc:
        click.echo(f"INVALID: {exc}", err=True)
        sys.exit(1)
    how = (
        "the given public key" if public_key else "the key embedded in the report (compare its key id with the node's)"
    )
    digest = document_digest(raw)
    click.echo(f"OK: signature valid, key id {kid}, checked against {how}")
    click.echo(f"signature fingerprint {signature_fingerprint(document)}; file SHA-256 {digest}")


@main.command("import")
@config_option
@click.option("--store", default=None, help="Store URL (default: from the settings).")
@click.option("--node-prefix", "prefix", default=None, help="Node prefix (default: from the settings).")
@click.option("--data-dir", default=None, help="Data directory (default: from the settings).")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--prefix",
    "--to",
    "--enterprise-prefix",
    "target",
    required=True,
    help="Enterprise prefix to register under, e.g. 88.118.8.1001.",
)
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), help="Default: from the file name.")
@click.option("--template", "template_ref", metavar="ID@VERSION", help="Metadata template the CSV columns follow.")
@click.option("--chunk", default=5000, show_default=True, help="Items written per transaction.")
@click.option("--overwrite", is_flag=True, help="Replace handles that exist (default: keep them, count as present).")
@click.option("--restart", is_flag=True, help="Ignore a saved checkpoint and start from the first row.")
def import_command(config_file, store, prefix, data_dir, file, target, fmt, template_ref, chunk, overwrite, restart):  # type: ignore[no-untyped-def]
    """Register the identifiers in FILE (CSV or NDJSON) under an enterprise prefix.

    CSV: a header row with a `suffix` column, a `URL` column (index 1) and, with --template, one
    column per template field. NDJSON: one {"handle"|"suffix", "values"} object per line. The import
    is resumable: rerun the same command after an interruption and it continues where it stopped.
    Rejected rows go to FILE.rejects.ndjson.
    """
    fmt = fmt or ("csv" if file.lower().endswith(".csv") else "ndjson")
    if chunk < 1 or chunk > 100_000:
        raise click.UsageError("--chunk must be between 1 and 100000")
    size = os.path.getsize(file)

    async def work(registry: Registry, caller: Caller):  # type: ignore[no-untyped-def]
        template = None
        if template_ref:
            ident, _, version_text = template_ref.partition("@")
            version = parse_version(version_text)
            if version is None:
                raise click.UsageError("--template is ID@VERSION")
            template = await registry.template(normalise_prefix(target), ident, version) or await registry.template(
                "", ident, version
            )
            if template is None:
                raise click.UsageError(f"no template {template_ref}")
        with click.progressbar(length=size, label=f"importing {os.path.basename(file)}", file=sys.stderr) as bar:
            done = [0]

            def progress(offset: int) -> None:
                bar.update(offset - done[0])
                done[0] = offset

            return await import_file(
                registry,
                caller,
                file,
                prefix=target,
                fmt=fmt,
                template=template,
                chunk=chunk,
                overwrite=overwrite,
                resume=not restart,
                progress=progress,
            )

    t0 = time.perf_counter()
    summary = _admin(config_file, work, store=store, prefix=prefix, data_dir=data_dir)
    elapsed = time.perf_counter() - t0
    if summary.resumed_from_line:
        click.echo(f"resumed after line {summary.resumed_from_line}")
    click.echo(
        f"rows {summary.rows}: created {summary.created}, replaced {summary.replaced}, "
        f"already present {summary.already_present}, failed {summary.failed} "
        f"({elapsed:.1f}s, {summary.created / elapsed if elapsed else 0:,.0f} created/s)"
    )
    for failure in summary.failures[:5]:
        click.echo(f"  line {failure['line']}: {failure['message']}", err=True)
    if summary.rejects_file:
        click.echo(f"rejected rows: {summary.rejects_file}", err=True)
    if summary.failed:
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
