"""The operator's commands: ``admin reset-secret``, ``audit list``, ``cache show|forget``,
``backup`` and ``restore``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from typing import Any

import click

from registry.errors import HandleError, StoreUnavailable
from registry.stores import store_class
from registry.stores.sqlite import SQLiteStore, database_file
from resolver.cli.common import (
    CACHE,
    STORE,
    Failed,
    Unreachable,
    cli_source,
    emit,
    json_option,
    run_admin,
    settings,
    warn,
)
from resolver.config import Config
from resolver.ops.banner import admin_identity, secret_notice

__all__ = ["admin", "audit", "backup", "cache_group", "restore"]

PG_RECIPE = (
    "the store is PostgreSQL: back it up with pg_dump (and put it back with pg_restore) as README "
    "'Backups and upgrades' shows, e.g. pg_dump --format=custom --file=idnode.dump '{url}'"
)


def _handles(n: int) -> str:
    return f"{n:,} handle" + ("" if n == 1 else "s")


def _utc(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _audit(config: Config, action: str, target: str, detail: dict[str, Any]) -> None:
    """Record an action of this process in the store's audit log."""
    identity, _ = admin_identity(config)
    run_admin(config, lambda r, c: r.audit.append(identity, action, target, source=cli_source(), detail=detail))


# -- admin -----------------------------------------------------------------------------------------
@click.group()
def admin() -> None:
    """The node administrator's identity (300:0.NA/<prefix>)."""


@admin.command("reset-secret", short_help="Replace a lost admin secret; prints the new one once.")
@click.option("--yes", is_flag=True, help="Do not ask: the old secret stops working at once.")
@settings(*STORE, *CACHE)
def admin_reset_secret(config: Config, yes: bool) -> None:
    """Replace a lost node administrator secret with a new one, printed once.

    For whoever has access to the store (its files, or the PostgreSQL database): the old secret is
    refused from the next request on, on every node that shares the store and its cache. The
    reset is recorded in the audit log (idnode audit list).
    """
    identity, encoded = admin_identity(config)
    if not yes:
        click.confirm(f"Replace the secret key of {identity}? Every client using the old one is refused", abort=True)

    # The registry records the reset in the audit log, in the transaction that replaces the key.
    secret = run_admin(config, lambda registry, caller: registry.reset_admin_secret(caller), writes=True)
    click.echo(secret_notice(config, secret))
    click.echo(f"identity {identity}   (as curl -u and pyhandle send it: {encoded})")


# -- audit -----------------------------------------------------------------------------------------
@click.group()
def audit() -> None:
    """The audit log: operator actions recorded in the store."""


@audit.command("list")
@click.option("--action", default=None, help="Only this action, e.g. admin.reset-secret.")
@click.option("--target", default=None, help="Only actions on this target.")
@click.option("--actor", default=None, help="Only actions of this identity, e.g. 300:0.NA/88.118.8.")
@click.option("--since", default=None, metavar="YYYY-MM-DD", help="Only actions on or after this day (UTC).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Most entries shown.")
@click.option("--before", "before_id", type=click.IntRange(min=1), help="Entries older than this id (the next page).")
@json_option
@settings(*STORE)
def audit_list(
    config: Config,
    action: str | None,
    target: str | None,
    actor: str | None,
    since: str | None,
    limit: int,
    before_id: int | None,
    as_json: bool,
) -> None:
    """List audit-log entries, newest first."""
    start = None
    if since:
        try:
            start = int(dt.datetime.combine(dt.date.fromisoformat(since), dt.time(), dt.UTC).timestamp())
        except ValueError:
            raise click.BadParameter("a day as YYYY-MM-DD", param_hint="--since") from None
    entries = run_admin(
        config,
        lambda r, c: r.audit.entries(
            limit=limit, before_id=before_id, action=action, target=target, since=start, actor=actor
        ),
    )
    rows = [{**dataclasses.asdict(e), "at": _utc(e.at), "detail": json.loads(e.detail)} for e in entries]
    if as_json:
        emit(rows, True)
        return
    if not rows:
        click.echo("no entries")
    for row in rows:
        detail = " ".join(f"{k}={v}" for k, v in row["detail"].items())
        click.echo(
            f"{row['id']:>6}  {row['at']}  {row['action']:<20} {row['target']}  by {row['actor']} ({row['source']})"
        )
        if detail:
            click.echo(f"        {detail}")


# -- cache -----------------------------------------------------------------------------------------
@click.group("cache", short_help="The shared Redis cache recorded in the store.")
def cache_group() -> None:
    """The Redis cache the store's nodes share, as `idnode serve --redis` records it in the store.

    Commands that write, and nodes started without a redis setting, use the recorded cache so that
    the running nodes drop what they change."""


@cache_group.command("show")
@json_option
@settings(*STORE)
def cache_show(config: Config, as_json: bool) -> None:
    """Print the shared cache recorded in the store."""
    from resolver.cache.shared import recorded  # lazy: the Redis cache tiers, as in writer_cache

    shared = run_admin(config, lambda r, c: recorded(r.store))
    if shared is None:
        click.echo("no shared cache recorded: writers without a redis setting tell no cache")
        return
    emit(dataclasses.asdict(shared), as_json)


@cache_group.command("forget", short_help="Forget the recorded cache.")
@settings(*STORE)
def cache_forget(config: Config) -> None:
    """Forget the recorded cache, once no node uses that Redis any more (a node started with a
    redis setting records its own again)."""
    from resolver.cache.shared import forget_shared_cache as forget  # lazy: as in cache show

    before = run_admin(config, lambda r, c: forget(r.store))
    click.echo(f"forgot {before.describe()}" if before else "no shared cache was recorded")


# -- backup and restore ----------------------------------------------------------------------------
def _sqlite_file(config: Config, what: str) -> str:
    """The embedded store's database file; a PostgreSQL store is refused with the pg_dump recipe."""
    try:
        embedded = store_class(config.store_url) is SQLiteStore
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not embedded:
        from resolver.cache.shared import without_password

        raise Failed(
            f"idnode {what} is for the embedded SQLite store; "
            + PG_RECIPE.format(url=without_password(config.store_url)[0])
        )
    path = database_file(config.store_url)
    if path is None:
        raise click.UsageError("an in-memory store cannot be backed up or restored")
    return path


def _key_note(config: Config) -> str:
    if config.report_key_file:
        return (
            f"keep {os.path.abspath(config.report_key_file)} with it: the report-signing key is kept in that "
            "file (report_key_file), not in the store"
        )
    return "the report-signing key is in the store, so in the backup: keep the backup as private as the store"


@click.command(short_help="Copy the running embedded store to a backup file.")
@click.argument("destination", metavar="DEST", type=click.Path(dir_okay=True, file_okay=True))
@click.option("--force", is_flag=True, help="Replace DEST if it is a file that exists.")
@settings(*STORE, "report_key_file")
def backup(config: Config, destination: str, force: bool) -> None:
    """Copy the embedded store to DEST (a file, or a directory for idnode-<time>.db), consistently,
    while the node runs and writes.

    SQLite's online backup API copies the database as of one instant: every write acknowledged
    before it is in the copy. The copy is checked, private (0600) and written whole or not at all.
    A PostgreSQL store is refused: use pg_dump (README, "Backups and upgrades").
    """
    from registry.stores.sqlite_files import backup_database

    database = _sqlite_file(config, "backup")
    try:
        report = backup_database(database, destination, overwrite=force)
    except StoreUnavailable as exc:
        raise Unreachable(exc.message) from None
    except HandleError as exc:
        raise Failed(exc.message) from None
    click.echo(
        f"backed up {database} to {report.path}: {report.bytes:,} bytes, {_handles(report.handles)}, "
        f"schema version {report.schema_version}, write version {report.write_version}"
    )
    click.echo(_key_note(config))
    detail = {"from": database, "bytes": report.bytes, "handles": report.handles, "write_version": report.write_version}
    try:
        _audit(config, "store.backup", report.path, detail)
    except click.ClickException as exc:
        warn(f"the backup is made, but could not be recorded in the audit log: {exc.message}")


@click.command(short_help="Put a backup in place of a stopped node's store.")
@click.argument("source", metavar="SRC", type=click.Path(exists=True, dir_okay=False))
@click.option("--force", is_flag=True, help="Replace a store that is there (it is kept beside it first).")
@settings(*STORE, "report_key_file")
def restore(config: Config, source: str, force: bool) -> None:
    """Put the backup SRC in place of the embedded store of a stopped node.

    Refused while a node or another idnode command has the store open, and when the data directory
    already holds a store, unless --force (which keeps that store beside it as
    idnode.db.before-restore-<time>). A backup from an earlier release is upgraded when the store is
    next opened. A PostgreSQL store is refused: use pg_restore (README, "Backups and upgrades").
    """
    from registry.stores.sqlite_files import restore_database

    database = _sqlite_file(config, "restore")
    try:
        report = restore_database(source, database, force=force)
    except StoreUnavailable as exc:
        raise Unreachable(exc.message) from None
    except HandleError as exc:
        raise Failed(exc.message) from None
    if report.kept:
        click.echo(f"the store that was there is kept as {report.kept}")
    click.echo(
        f"restored {source} to {report.path}: {_handles(report.handles)}, schema version {report.schema_version}, "
        f"write version {report.write_version}"
    )
    detail = {"from": os.path.abspath(source), "handles": report.handles, "write_version": report.write_version}
    if report.kept:
        detail["kept"] = report.kept
    _audit(config, "store.restore", report.path, detail)  # opening the store upgrades an older backup
    _check_restored(config)


def _check_restored(config: Config) -> None:
    """What the restored store needs from outside it: its report-signing key file, a fresh cache."""
    from promotion_tracker.signing import EXTERNAL_KEY, SIGNING_KEY_META, Signer, key_id
    from resolver.cache.shared import recorded

    async def read(registry: Any, caller: Any) -> tuple[str | None, Any]:
        return await registry.store.get_meta(SIGNING_KEY_META), await recorded(registry.store)

    stored, shared = run_admin(config, read)
    if stored is not None and stored.startswith(EXTERNAL_KEY):
        kid = stored[len(EXTERNAL_KEY) :]
        path = config.report_key_file
        try:
            with open(path, encoding="ascii") as f:
                ok = key_id(Signer.from_pem(f.read()).public_key) == kid
        except (OSError, ValueError):
            ok = False
        if not path or not ok:
            warn(
                f"this store's report-signing key (key id {kid}) is kept in a file: put that file back and set "
                "report_key_file to it before starting the node, or it refuses to start"
            )
    if shared is not None:
        warn(
            f"the nodes of this store shared the Redis cache {shared.describe()}: it may hold records newer than "
            "the backup; delete its keys with that prefix before starting the nodes"
        )
