"""``idnode promoter``, ``idnode enterprise`` and ``idnode auditor``: who is on the node."""

from __future__ import annotations

import datetime as dt

import click

from registry.views import enterprise_json, promoter_json
from resolver.cli.common import CACHE, STORE, emit, json_option, run_admin, settings
from resolver.config import Config

__all__ = ["auditor", "enterprise", "promoter"]


@click.group()
def promoter() -> None:
    """Promoters (推广企业/机构) under clause 8."""


@promoter.command("add")
@click.option("--name", required=True, help="Legal name.")
@click.option("--uscc", required=True, help="Unified social credit code (统一社会信用代码).")
@json_option
@settings(*STORE, *CACHE)
def promoter_add(config: Config, name: str, uscc: str, as_json: bool) -> None:
    """Register a promoter."""
    p = run_admin(config, lambda r, c: r.add_promoter(c, name, uscc), writes=True)
    emit(promoter_json(p), as_json)


@promoter.command("list")
@json_option
@settings(*STORE)
def promoter_list(config: Config, as_json: bool) -> None:
    """List promoters."""
    rows = run_admin(config, lambda r, c: r.store.list_promoters())
    emit([promoter_json(p) for p in rows], as_json)


@click.group()
def enterprise() -> None:
    """Application enterprises (推广应用企业) and their prefixes."""


@enterprise.command("add", short_help="Onboard an enterprise; prints its secret once.")
@click.option("--name", required=True, help="Legal name.")
@click.option("--uscc", required=True, help="Unified social credit code (统一社会信用代码).")
@click.option("--promoter", "promoter_ref", required=True, help="Promoter id or credit code.")
@click.option("--enterprise-prefix", default=None, help="Enterprise prefix to allocate (default: the next free one).")
@json_option
@settings(*STORE, *CACHE)
def enterprise_add(
    config: Config, name: str, uscc: str, promoter_ref: str, enterprise_prefix: str | None, as_json: bool
) -> None:
    """Onboard an enterprise: allocate its prefix and print its admin identity and secret (once)."""
    ent, secret = run_admin(
        config, lambda r, c: r.add_enterprise(c, name, uscc, promoter_ref, enterprise_prefix), writes=True
    )
    emit({**enterprise_json(ent), "secret": secret}, as_json)


@enterprise.command("list", short_help="List enterprises.")
@json_option
@settings(*STORE)
def enterprise_list(config: Config, as_json: bool) -> None:
    """List enterprises with their prefixes, status and current promoter."""
    rows = run_admin(config, lambda r, c: r.store.list_enterprises())
    emit([enterprise_json(e) for e in rows], as_json)


@enterprise.command("move", short_help="Attribute an enterprise to another promoter.")
@click.argument("enterprise_ref")
@click.option("--promoter", "promoter_ref", required=True, help="The new promoter (id or credit code).")
@json_option
@settings(*STORE, *CACHE)
def enterprise_move(config: Config, enterprise_ref: str, promoter_ref: str, as_json: bool) -> None:
    """Attribute ENTERPRISE_REF (id, enterprise prefix or credit code) to another promoter from now on."""
    ent = run_admin(config, lambda r, c: r.move_enterprise(c, enterprise_ref, promoter_ref), writes=True)
    emit(enterprise_json(ent), as_json)


def _status_command(command_name: str, status: str, doc: str) -> None:
    @enterprise.command(command_name, help=doc, short_help=doc.split(" ENTERPRISE_REF")[0] + " an enterprise.")
    @click.argument("enterprise_ref")
    @json_option
    @settings(*STORE, *CACHE)
    def command(config: Config, enterprise_ref: str, as_json: bool) -> None:
        ent = run_admin(config, lambda r, c: r.set_enterprise_status(c, enterprise_ref, status), writes=True)
        emit(enterprise_json(ent), as_json)


_status_command(
    "disable",
    "disabled",
    "Disable ENTERPRISE_REF (id, enterprise prefix or credit code): its writes are refused, its identifiers "
    "still resolve.",
)
_status_command("enable", "active", "Re-enable ENTERPRISE_REF (id, enterprise prefix or credit code).")


@click.group()
def auditor() -> None:
    """The bureau's read-only identities (300:<prefix>/auditor/NAME)."""


@auditor.command("add")
@click.option("--name", required=True, help="Short name: a-z, 0-9 and '-'.")
@settings(*STORE, *CACHE)
def auditor_add(config: Config, name: str) -> None:
    """Create 300:<prefix>/auditor/NAME and print its secret key (once)."""
    identity, secret = run_admin(config, lambda r, c: r.add_auditor(c, name), writes=True)
    click.echo(f"identity={identity}  secret={secret}")


@auditor.command("list")
@json_option
@settings(*STORE)
def auditor_list(config: Config, as_json: bool) -> None:
    """List the bureau's identities in force."""
    rows = run_admin(config, lambda r, c: r.list_auditors(c))
    created = (dt.datetime.fromtimestamp(a.created_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for a in rows)
    emit([{"name": a.name, "identity": a.identity, "created": c} for a, c in zip(rows, created, strict=True)], as_json)


@auditor.command("revoke", short_help="Revoke an auditor identity.")
@click.argument("name")
@settings(*STORE, *CACHE)
def auditor_revoke(config: Config, name: str) -> None:
    """Revoke 300:<prefix>/auditor/NAME: its credentials are refused from the next request on."""
    identity = run_admin(config, lambda r, c: r.revoke_auditor(c, name), writes=True)
    click.echo(f"revoked {identity}")
