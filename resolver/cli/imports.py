"""``idnode import``: register the identifiers of a CSV or NDJSON file under an enterprise prefix."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any

import click
from click.core import ParameterSource

from registry.importer import import_file
from registry.model import normalise_prefix
from registry.service import Registry
from registry.templates import parse_version
from resolver.cli.common import CACHE, EXIT_REJECTED, STORE, load_settings, run_admin, settings, warn, warn_renamed
from resolver.config import Config

__all__ = ["import_command"]


def _flags(ctx: click.Context, config: Config, enterprise_prefix: str | None, old_to: str | None, old_node: str | None):  # type: ignore[no-untyped-def]
    """(settings, enterprise prefix) from the flags, the spellings of earlier releases included:
    there ``--prefix`` (and ``--to``) named the enterprise prefix and ``--node-prefix`` the node's."""
    prefix_given = ctx.get_parameter_source("prefix") is ParameterSource.COMMANDLINE
    if old_to is not None:
        warn_renamed("--to", "--enterprise-prefix", " (--to is the end of a period in idnode tally)")
        if enterprise_prefix is not None:
            raise click.UsageError("give the enterprise prefix once, with --enterprise-prefix")
        enterprise_prefix = old_to
    if enterprise_prefix is None:
        if not prefix_given:
            raise click.UsageError("Missing option '--enterprise-prefix' (the enterprise prefix to register under).")
        warn(
            "`idnode import --prefix ENTERPRISE_PREFIX` is deprecated and goes in the next release: use "
            "--enterprise-prefix; --prefix names the node prefix, as in every other command"
        )
        enterprise_prefix = config.prefix
        config = dataclasses.replace(config, prefix=load_settings(ctx.params.get("config_file"), {}).prefix)
        prefix_given = False
    if old_node is not None:
        warn_renamed("--node-prefix", "--prefix")
        if prefix_given:
            raise click.UsageError("give the node prefix once, with --prefix")
        config = dataclasses.replace(config, prefix=old_node)
    return config, enterprise_prefix


@click.command("import", short_help="Register the identifiers of a CSV or NDJSON file.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--enterprise-prefix", default=None, help="Enterprise prefix to register under, e.g. 88.118.8.1001.")
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), help="FILE's format (default: from its name).")
@click.option("--template", "template_ref", metavar="ID@VERSION", help="Metadata template the CSV columns follow.")
@click.option("--chunk", default=5000, show_default=True, help="Items written per transaction.")
@click.option("--overwrite", is_flag=True, help="Replace handles that exist (default: keep them, count as present).")
@click.option("--restart", is_flag=True, help="Ignore a saved checkpoint and start from the first row.")
@click.option("--to", "old_to", hidden=True)
@click.option("--node-prefix", "old_node", hidden=True)
@settings(*STORE, *CACHE)
def import_command(
    config: Config,
    file: str,
    enterprise_prefix: str | None,
    fmt: str | None,
    template_ref: str | None,
    chunk: int,
    overwrite: bool,
    restart: bool,
    old_to: str | None,
    old_node: str | None,
) -> None:
    """Register the identifiers in FILE (CSV or NDJSON) under an enterprise prefix.

    CSV: a header row with a `suffix` column, a `URL` column (index 1) and, with --template, one
    column per template field. NDJSON: one {"handle"|"suffix", "values"} object per line. The import
    is resumable: rerun the same command after an interruption and it continues where it stopped.
    Rejected rows go to FILE.rejects.ndjson, and the exit code is then 3.
    """
    config, target = _flags(click.get_current_context(), config, enterprise_prefix, old_to, old_node)
    fmt = fmt or ("csv" if file.lower().endswith(".csv") else "ndjson")
    if chunk < 1 or chunk > 100_000:
        raise click.UsageError("--chunk must be between 1 and 100000")
    size = os.path.getsize(file)

    async def work(registry: Registry, caller: Any) -> Any:
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
    summary = run_admin(config, work, writes=True)
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
        sys.exit(EXIT_REJECTED)
