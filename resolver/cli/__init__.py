"""The ``idnode`` command line: ``serve`` (the default) and the operator's commands.

One module per kind of command; what they share (settings flags made from :class:`Config`, exit
codes, running work on the store as the node administrator) is in :mod:`resolver.cli.common`.
"""

from __future__ import annotations

import click

from resolver.cli.common import EXIT_CODES_HELP
from resolver.cli.imports import import_command
from resolver.cli.onboarding import auditor, enterprise, promoter
from resolver.cli.operations import admin, audit, backup, cache_group, restore
from resolver.cli.serve import serve
from resolver.cli.tally import tally
from resolver.cli.templates import template

__all__ = ["main"]


class DefaultGroup(click.Group):
    """``idnode`` alone, or ``idnode --port 9000``, means ``idnode serve …``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0].startswith("-") and args[0] not in ("--help", "-h", "--version")):
            args = ["serve", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="idnode")
def main() -> None:
    """idnode: an industrial-internet identifier resolution secondary node (Handle System style).

    Run without a command to serve on the embedded defaults (SQLite under ./data, 127.0.0.1:8000).
    Settings come from defaults < --config FILE < IDNODE_* environment variables < flags, the same
    for every command: --prefix is the node prefix, --store, --data-dir, --redis and
    --redis-key-prefix name the store and the shared cache, as for serve.
    """


for command in (serve, promoter, enterprise, auditor, template, import_command, tally, admin, audit, cache_group):
    main.add_command(command)
main.add_command(backup)
main.add_command(restore)
