"""``idnode tally show`` and ``idnode tally verify``: the clause-8 tally from the store, and the
check of a saved signed report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from typing import Any

import click

from promotion_tracker.policy import Policy, PolicyError
from promotion_tracker.report import document_bytes, document_digest, signature_fingerprint, tally_json
from promotion_tracker.signing import SigningKeyError, VerifyError, node_signer, verify_document
from promotion_tracker.tally import TallyError, compute_tally, default_period
from registry.days import parse_day
from registry.errors import InvalidRequest
from registry.service import Registry
from resolver.cli.common import STORE, Failed, run_admin, settings, warn_renamed
from resolver.config import Config

__all__ = ["tally"]


class _TallyGroup(click.Group):
    """``idnode tally [--from …]`` (the shape before ``tally show``) still works for one release."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            warn_renamed("`idnode tally [OPTIONS]`", "`idnode tally show [OPTIONS]`")
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_TallyGroup, short_help="The clause-8 tally: show, verify.")
def tally() -> None:
    """The clause-8 tally: `show` computes it from the store, `verify` checks a saved signed report."""


@tally.command("show")
@click.option("--from", "period_from", metavar="YYYY-MM-DD", help="First day of the period (Asia/Shanghai).")
@click.option("--to", "period_to", metavar="YYYY-MM-DD", help="Day after the last day of the period.")
@click.option(
    "--as-of",
    "as_of",
    metavar="TIME",
    help="Snapshot time, ISO 8601, rounded down to the hour (default: live, everything so far).",
)
@click.option("--mode", type=click.Choice(["per_enterprise", "pooled"]), help="Reading of clause 8 (default: policy).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option(
    "--cap",
    "caps",
    multiple=True,
    metavar="PROMOTER:YUAN",
    help="Clause-17 cap: the promoter's previous-year economic contribution (repeatable).",
)
@click.option("--policy", "old_policy", type=click.Path(exists=True, dir_okay=False), hidden=True)
@settings(*STORE, "policy_file", "report_key_file")
def tally_show(
    config: Config,
    period_from: str | None,
    period_to: str | None,
    as_of: str | None,
    mode: str | None,
    fmt: str,
    caps: tuple[str, ...],
    old_policy: str | None,
) -> None:
    """Clause-8 tally per promoter for [--from, --to) as of --as-of. JSON and CSV are made from the
    report signed with the node's key; `idnode tally verify FILE` checks a saved JSON report."""
    # Lazy: the bureau's HTTP pages (where the report's parsers live) and openpyxl only for the tally.
    from promotion_tracker.exports import promoters_csv
    from promotion_tracker.routes import parse_beijing_instant, parse_caps

    if old_policy:
        warn_renamed("--policy", "--policy-file", " (the name of the setting, as for serve)")
        config = dataclasses.replace(config, policy_file=old_policy)
    now = dt.datetime.now(dt.UTC)
    default_from, default_to = default_period(now)
    try:
        start = parse_day(period_from) if period_from else default_from
        end = parse_day(period_to) if period_to else default_to
        snapshot = parse_beijing_instant(as_of, "--as-of") if as_of else None
        policy = Policy.from_file(config.policy_file) if config.policy_file else Policy()
        if mode:
            policy = dataclasses.replace(policy, mode=mode)
        cap_map = parse_caps(list(caps))
    except (ValueError, PolicyError) as exc:
        raise click.UsageError(str(exc)) from None
    except InvalidRequest as exc:
        raise click.UsageError(exc.message) from None

    async def work(registry: Registry, caller: Any) -> Any:
        result = await compute_tally(registry.store, start, end, snapshot, policy, now=now, contribution_caps=cap_map)
        signer = await node_signer(registry.store, config.report_key_file or None) if fmt in ("json", "csv") else None
        return result, signer

    try:
        result, signer = run_admin(config, work)
    except TallyError as exc:
        raise click.UsageError(str(exc)) from None
    except SigningKeyError as exc:
        raise Failed(str(exc)) from None
    if fmt in ("json", "csv"):
        document = signer.sign(tally_json(result, node_prefix=config.prefix, generated_at=now))
        data = document_bytes(document)
        if fmt == "json":
            click.echo(data.decode("utf-8"), nl=False)
        else:  # the CSV names the digest of the signed JSON it was made from (printed on stderr)
            click.echo(f"signed JSON SHA-256 {document_digest(data)}", err=True)
            sys.stdout.buffer.write(promoters_csv(document, document_digest(data)))
            sys.stdout.flush()
        return
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
def tally_verify(file: Any, public_key: Any) -> None:
    """Check the signature of a saved JSON report (FILE, or - for standard input). Exit code 1
    when it does not verify."""
    try:
        raw = file.read()
        document = json.loads(raw.decode("utf-8"))
        kid = verify_document(document, public_key.read() if public_key else None)
    except (ValueError, UnicodeDecodeError, VerifyError) as exc:
        raise Failed(f"INVALID: {exc}") from None
    how = (
        "the given public key" if public_key else "the key embedded in the report (compare its key id with the node's)"
    )
    click.echo(f"OK: signature valid, key id {kid}, checked against {how}")
    click.echo(f"signature fingerprint {signature_fingerprint(document)}; file SHA-256 {document_digest(raw)}")
