"""``idnode import``: register the identifiers of a CSV, NDJSON or XLSX file under an enterprise prefix.

The rows go through the node's job machinery (registry.job_run), checkpointed by rows written.
Ctrl-C writes (or abandons) the chunk being read, saves the checkpoint and prints the command that
resumes; a second Ctrl-C stops at once (a rerun still never registers a row twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import click
from click.core import ParameterSource

from registry.errors import HandleError
from registry.importer import ImportSummary, import_file
from registry.model import normalise_prefix
from registry.rows import ColumnSpec, parse_column
from registry.service import Registry
from registry.templates import parse_version
from resolver.cli.common import (
    CACHE,
    EXIT_INTERRUPTED,
    EXIT_REJECTED,
    STORE,
    cli_source,
    load_settings,
    run_admin,
    settings,
    warn,
    warn_renamed,
)
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


FORMATS = {".csv": "csv", ".xlsx": "xlsx", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson"}


def _columns(specs: tuple[str, ...]) -> list[ColumnSpec]:
    out = []
    for spec in specs:
        try:
            out.append(parse_column(spec))
        except HandleError as exc:
            raise click.BadParameter(exc.message, param_hint="--column") from None
    return out


def resume_command(ctx: click.Context) -> str:
    """The command line that continues this import: the same arguments and flags as given (the
    checkpoint is found next to the file), without --restart."""
    words = ["idnode", ctx.info_name or "import"]
    for param in ctx.command.params:
        if param.name in (None, "restart") or ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            words.append(str(value))
            continue
        assert isinstance(param, click.Option)
        if param.is_flag and param.secondary_opts:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            if value:
                words.append(param.opts[0])
        elif param.multiple:
            for item in value:
                words += [param.opts[0], str(item)]
        else:
            words += [param.opts[0], str(value)]
    return shlex.join(words)


@contextlib.contextmanager
def _first_ctrl_c_stops(stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C sets ``stop`` (the chunk being read is written, the checkpoint saved); a second one
    interrupts at once."""
    loop = asyncio.get_running_loop()

    def pressed() -> None:
        click.echo(
            "\nidnode: stopping after the chunk being read (its rows are written and the checkpoint saved); "
            "Ctrl-C again to stop at once",
            err=True,
        )
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C interrupts

    try:
        loop.add_signal_handler(signal.SIGINT, pressed)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


@click.command("import", short_help="Register the identifiers of a CSV, NDJSON or XLSX file.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--enterprise-prefix", default=None, help="Enterprise prefix to register under, e.g. 88.118.8.1001.")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "ndjson", "xlsx"]), help="FILE's format (default: from its name)."
)
@click.option("--template", "template_ref", metavar="ID@VERSION", help="Metadata template the columns follow.")
@click.option(
    "--column",
    "column_specs",
    multiple=True,
    metavar="NAME=TYPE[@INDEX]",
    help="Store column NAME as values of TYPE (at INDEX; default: the next free from 2). Columns neither "
    "mapped, nor URL, nor fields of --template are refused.",
)
@click.option(
    "--chunk", default=1000, show_default=True, help="Most rows per transaction (one commits at least every second)."
)
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
    column_specs: tuple[str, ...],
    chunk: int,
    overwrite: bool,
    restart: bool,
    old_to: str | None,
    old_node: str | None,
) -> None:
    """Register the identifiers in FILE (CSV, XLSX or NDJSON) under an enterprise prefix.

    CSV and XLSX: a header row with a `suffix` (or `handle`) column, `URL` (index 1) and, with
    --template, the template's fields; any other column needs --column NAME=TYPE[@INDEX]. NDJSON:
    one {"handle"|"suffix", "values"} object per line.

    Rows are written a chunk at a time, with a checkpoint after each. Ctrl-C writes the rows read
    so far, saves the checkpoint and prints the command that resumes; rerun the same command after
    any interruption and it continues after the last row written (rows found already registered
    count as present, never twice). Rejected rows go to FILE.rejects.ndjson with their line in the
    file, and the exit code is then 3; an interrupted import exits with 130.
    """
    ctx = click.get_current_context()
    config, target = _flags(ctx, config, enterprise_prefix, old_to, old_node)
    fmt = fmt or FORMATS.get(os.path.splitext(file)[1].lower(), "ndjson")
    if chunk < 1 or chunk > 100_000:
        raise click.UsageError("--chunk must be between 1 and 100000")
    columns = _columns(column_specs)
    if columns and fmt == "ndjson":
        raise click.UsageError("--column is for CSV and XLSX files")
    size = os.path.getsize(file)
    stop = asyncio.Event()

    async def work(registry: Registry, caller: Any) -> ImportSummary:
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
        # The bar follows the bytes of CSV and NDJSON files; a workbook's rows are not known before.
        label = f"importing {os.path.basename(file)}"
        shown = click.progressbar(length=size, label=label, file=sys.stderr) if fmt != "xlsx" else None
        with shown or contextlib.nullcontext() as bar, _first_ctrl_c_stops(stop):
            done = [0]

            def progress(reached: int) -> None:
                if bar is not None:
                    bar.update(reached - done[0])
                done[0] = reached

            summary = await import_file(
                registry,
                caller,
                file,
                prefix=target,
                fmt=fmt,
                template=template,
                columns=columns,
                chunk=chunk,
                overwrite=overwrite,
                resume=not restart,
                stop=stop,
                progress=progress,
            )
        detail = {
            "file": os.path.abspath(file),
            "rows": summary.rows,
            "created": summary.created,
            "replaced": summary.replaced,
            "present": summary.already_present,
            "rejected": summary.failed,
            "line": summary.line,
            "interrupted": summary.interrupted,
        }
        try:
            await registry.audit.append(str(caller.identity), "import.file", target, source=cli_source(), detail=detail)
        except HandleError as exc:
            warn(f"the import could not be recorded in the audit log: {exc.message}")
        return summary

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
    if summary.interrupted:
        click.echo(
            f"interrupted: the rows up to line {summary.line} are written and counted, and the checkpoint is saved "
            f"({file}.idnode-progress). To resume, run:\n  {resume_command(ctx)}",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    if summary.failed:
        sys.exit(EXIT_REJECTED)
