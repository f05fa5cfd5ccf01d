"""``idnode template``: metadata templates (数据模板), through the registry's template service, with
the same checks as ``/api/templates``."""

from __future__ import annotations

from typing import Any

import click

from registry.errors import HandleNotFound, InvalidRequest
from registry.inputs import decode_json
from registry.model import normalise_prefix
from registry.templates import parse_version
from resolver.cli.common import CACHE, STORE, emit, json_option, run_admin, settings

__all__ = ["template"]

MAX_FILE = 1_048_576  # bytes of a template file, as max_body_bytes bounds /api/templates

scope_option = click.option(
    "--enterprise-prefix",
    default=None,
    help="The enterprise prefix whose own template this is (default: the node-wide one).",
)


def _read(file: Any) -> dict[str, Any]:
    raw = file.read(MAX_FILE + 1)
    if len(raw) > MAX_FILE:
        raise click.UsageError(f"{file.name}: larger than {MAX_FILE} bytes")
    try:
        body = decode_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise click.UsageError(f"{file.name}: not UTF-8") from None
    except InvalidRequest as exc:
        raise click.UsageError(f"{file.name}: {exc.message}") from None
    if not isinstance(body, dict):
        raise click.UsageError(f"{file.name}: a template is a JSON object")
    return body


def _scope(flag: str | None, body: dict[str, Any], file_name: str) -> str | None:
    """The enterprise prefix from the flag or the file's ``prefix`` (the API's field); not both, unless equal."""
    in_file = body.pop("prefix", None)
    if in_file is not None and not isinstance(in_file, str):
        raise click.UsageError(f"{file_name}: prefix must be a string")
    if flag and in_file and normalise_prefix(flag) != normalise_prefix(in_file):
        raise click.UsageError(f"--enterprise-prefix {flag} and the prefix {in_file} in {file_name} differ")
    return flag or in_file


def _summary(t: Any) -> dict[str, Any]:
    return {
        "id": t.id,
        "version": t.version,
        "scope": t.scope or "node",
        "fields": len(t.fields),
        "description": t.description,
    }


@click.group(short_help="Metadata templates: list, show, create, add-version.")
def template() -> None:
    """Metadata templates: the fields (index >= 2000) an identifier of a kind carries."""


@template.command("list", short_help="List every version of every template.")
@scope_option
@json_option
@settings(*STORE)
def template_list(config: Any, enterprise_prefix: str | None, as_json: bool) -> None:
    """List every version of every template (of one enterprise with --enterprise-prefix)."""
    templates = run_admin(config, lambda r, c: r.list_templates())
    if enterprise_prefix is not None:
        templates = [t for t in templates if t.scope == normalise_prefix(enterprise_prefix)]
    if as_json:
        emit([t.to_json() for t in templates], True)
    else:
        emit([_summary(t) for t in templates], False)


@template.command("show", short_help="Print a template as JSON.")
@click.argument("ref", metavar="ID[@VERSION]")
@scope_option
@settings(*STORE)
def template_show(config: Any, ref: str, enterprise_prefix: str | None) -> None:
    """Print template ID as JSON (as GET /api/templates/ID answers it): its latest version, or
    VERSION (written as import's --template names one)."""
    template_id, at, version_text = ref.partition("@")
    version = parse_version(version_text) if at else None
    if at and version is None:
        raise click.BadParameter("ID or ID@VERSION, VERSION a positive integer", param_hint="ID[@VERSION]")
    scope = normalise_prefix(enterprise_prefix) if enterprise_prefix else ""

    async def work(registry: Any, caller: Any) -> Any:
        found = await registry.template(scope, template_id, version)
        if found is None:
            at = f" version {version}" if version else ""
            raise HandleNotFound(f"no template {template_id}{at}" + (f" of {enterprise_prefix}" if scope else ""))
        return found

    emit(run_admin(config, work).to_json(), True)


@template.command("create", short_help="Create a template from a JSON file.")
@click.argument("file", type=click.File("rb"))
@scope_option
@settings(*STORE, *CACHE)
def template_create(config: Any, file: Any, enterprise_prefix: str | None) -> None:
    """Create version 1 of a template from FILE (JSON, as POST /api/templates takes it:
    {"id", "fields": [...], "description"?, "prefix"?}); - reads standard input."""
    body = _read(file)
    template_id = body.get("id")
    if not isinstance(template_id, str):
        raise click.UsageError(f"{file.name}: id must be a string")
    scope = _scope(enterprise_prefix, body, file.name)
    made = run_admin(config, lambda r, c: r.put_template(c, template_id, body, scope, new=True), writes=True)
    emit(made.to_json(), True)


@template.command("add-version", short_help="Add the next version of a template.")
@click.argument("template_id", metavar="ID")
@click.argument("file", type=click.File("rb"))
@scope_option
@settings(*STORE, *CACHE)
def template_add_version(config: Any, template_id: str, file: Any, enterprise_prefix: str | None) -> None:
    """Add the next version of template ID from FILE (JSON: {"fields": [...], "description"?}).
    Every field of the previous version must stay; set "disabled": true to retire one."""
    body = _read(file)
    if body.get("id", template_id) != template_id:
        raise click.UsageError(f"{file.name} names template {body['id']!r}, not {template_id!r}")
    scope = _scope(enterprise_prefix, body, file.name)
    made = run_admin(config, lambda r, c: r.put_template(c, template_id, body, scope, new=False), writes=True)
    emit(made.to_json(), True)
