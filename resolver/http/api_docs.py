"""The node's OpenAPI 3.1 document and a readable page made from it.

``resolver/http/openapi.json`` is maintained by hand next to the routes; ``tests/resolver/test_openapi.py``
keeps it true (every route described, every operation routed) and schemathesis fuzzes a live node
against it. ``GET /api/openapi.json`` serves the file as it is; ``GET /api/docs`` renders it as one
HTML page on the server: no scripts, no fonts or styles from elsewhere, so it works offline.
"""

from __future__ import annotations

import functools
import html
import json
import re
from importlib import resources
from typing import Any

from aiohttp import web

__all__ = ["api_docs_routes", "docs_html", "spec", "spec_bytes"]

api_docs_routes = web.RouteTableDef()
METHODS = ("get", "put", "post", "patch", "delete", "head", "options")


@functools.cache
def spec_bytes() -> bytes:
    return resources.files("resolver.http").joinpath("openapi.json").read_bytes()


@functools.cache
def spec() -> dict[str, Any]:
    return json.loads(spec_bytes())


@api_docs_routes.get("/api/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=spec_bytes(), content_type="application/json", charset="utf-8")


@api_docs_routes.get("/api/docs")
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=docs_html(), content_type="text/html", charset="utf-8")


# ------------------------------------------------------------------------------------------- rendering

_CODE = re.compile(r"`([^`]+)`")
_REF = "#/components/"
_STYLE = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei",system-ui,sans-serif;margin:0 auto;max-width:72rem;
padding:1.5rem 2rem;color:#1d2733;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.25rem;border-bottom:2px solid #d5dbe3;padding-bottom:.3rem;margin-top:2.5rem}
h3{font-size:1.05rem;margin:0}.en{color:#5b6675;font-weight:normal}
code,pre{font-family:ui-monospace,"SFMono-Regular",Consolas,monospace;font-size:.88em}
code{background:#f1f4f8;padding:0 .2em;border-radius:3px}
pre{background:#f6f8fa;border:1px solid #e1e6ec;padding:.6rem;overflow:auto;max-height:28rem}
table{border-collapse:collapse;width:100%;margin:.4rem 0}th,td{border-bottom:1px solid #e1e6ec;
padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#f6f8fa;font-weight:600}
.op{border:1px solid #d5dbe3;border-radius:6px;padding:.8rem 1rem;margin:1rem 0}
.m{display:inline-block;min-width:4.2rem;text-align:center;color:#fff;border-radius:4px;padding:.1rem .4rem;
font-weight:700;font-size:.85rem;margin-right:.5rem}
.get{background:#2f7d32}.put{background:#a15c00}.post{background:#1f5fa8}.patch{background:#6b3fa0}
.delete{background:#b3261e}.path{font-family:ui-monospace,Consolas,monospace;font-weight:600}
nav ul{columns:2;padding-left:1.2rem}.muted{color:#5b6675}
"""


def _text(value: str) -> str:
    """Escaped text with `code` spans and paragraphs (the small part of Markdown the document uses)."""
    paragraphs = [p.strip() for p in value.split("\n\n") if p.strip()]
    return "".join(f"<p>{_inline(p)}</p>" for p in paragraphs)


def _inline(value: str) -> str:
    return _CODE.sub(r"<code>\1</code>", html.escape(value))


def _resolve(document: dict[str, Any], node: Any) -> Any:
    """Follow a local ``$ref`` (components only) once."""
    if isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith(_REF):
        kind, _, name = node["$ref"][len(_REF) :].partition("/")
        return document.get("components", {}).get(kind, {}).get(name, {})
    return node


def _schema_summary(schema: Any) -> str:
    """A short description of a schema: a link to a named one, or its type."""
    if not isinstance(schema, dict):
        return ""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF + "schemas/"):
        name = ref.rsplit("/", 1)[1]
        return f'<a href="#schema-{html.escape(name)}"><code>{html.escape(name)}</code></a>'
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list):
            joiner = " + " if key == "allOf" else " | "
            return joiner.join(_schema_summary(s) for s in schema[key])
    kind = schema.get("type", "")
    if kind == "object" and isinstance(schema.get("properties"), dict):
        names = ", ".join(f"<code>{html.escape(name)}</code>" for name in schema["properties"])
        return f"object {{{names}}}"
    if kind == "array":
        return f"array of {_schema_summary(schema.get('items', {}))}"
    out = html.escape(" | ".join(kind) if isinstance(kind, list) else str(kind or "any"))
    if "enum" in schema:
        out += (
            " ("
            + ", ".join(f"<code>{html.escape(json.dumps(v, ensure_ascii=False))}</code>" for v in schema["enum"])
            + ")"
        )
    if "const" in schema:
        out = f"<code>{html.escape(json.dumps(schema['const'], ensure_ascii=False))}</code>"
    if "pattern" in schema:
        out += f" matching <code>{html.escape(schema['pattern'])}</code>"
    if "format" in schema:
        out += f" ({html.escape(schema['format'])})"
    return out


def _security(document: dict[str, Any], operation: dict[str, Any]) -> str:
    options = operation.get("security", document.get("security", [{}]))
    names = [", ".join(option) if option else "anonymous 匿名" for option in options]
    return " or ".join(f"<code>{html.escape(n)}</code>" if n != "anonymous 匿名" else n for n in names)


def _operation(document: dict[str, Any], path: str, method: str, operation: dict[str, Any]) -> str:
    anchor = html.escape(operation.get("operationId", f"{method}-{path}"))
    parts = [
        f'<div class="op" id="{anchor}"><h3><span class="m {method}">{method.upper()}</span>'
        f'<span class="path">{html.escape(path)}</span> '
        f'<span class="en">{_inline(operation.get("summary", ""))}</span></h3>',
        _text(operation.get("description", "")),
        f"<p><strong>认证 Authentication:</strong> {_security(document, operation)}</p>",
    ]
    params = [_resolve(document, p) for p in operation.get("parameters", [])]
    if params:
        rows = "".join(
            f"<tr><td><code>{html.escape(p.get('name', ''))}</code></td><td>{html.escape(p.get('in', ''))}</td>"
            f"<td>{'yes 是' if p.get('required') else ''}</td><td>{_schema_summary(p.get('schema', {}))}</td>"
            f"<td>{_inline(p.get('description', ''))}</td></tr>"
            for p in params
        )
        parts.append(
            "<table><tr><th>参数 Parameter</th><th>in</th><th>必需 Required</th><th>schema</th>"
            f"<th>说明 Description</th></tr>{rows}</table>"
        )
    body = _resolve(document, operation.get("requestBody"))
    if isinstance(body, dict) and body.get("content"):
        rows = "".join(
            f"<tr><td><code>{html.escape(ctype)}</code></td><td>{_schema_summary(media.get('schema', {}))}</td>"
            f"<td>{_inline(media.get('description', ''))}</td></tr>"
            for ctype, media in body["content"].items()
        )
        parts.append(
            "<table><tr><th>请求体 Request body</th><th>schema</th><th>说明 Description</th></tr>" + rows + "</table>"
        )
        parts.append(_text(body.get("description", "")))
    rows = []
    for status, response in operation.get("responses", {}).items():
        response = _resolve(document, response)
        content = response.get("content", {})
        kinds = "<br>".join(
            f"<code>{html.escape(ctype)}</code> {_schema_summary(media.get('schema', {}))}"
            for ctype, media in content.items()
        )
        headers = "".join(
            f"<br>Header <code>{html.escape(name)}</code>: {_inline(_resolve(document, header).get('description', ''))}"
            for name, header in response.get("headers", {}).items()
        )
        rows.append(
            f"<tr><td><strong>{html.escape(status)}</strong></td><td>{_inline(response.get('description', ''))}"
            f"{headers}</td><td>{kinds}</td></tr>"
        )
    parts.append(
        "<table><tr><th>响应 Response</th><th>说明 Description</th><th>Content-Type / schema</th></tr>"
        + "".join(rows)
        + "</table></div>"
    )
    return "".join(parts)


def _schema_block(name: str, schema: dict[str, Any]) -> str:
    text = html.escape(json.dumps(schema, ensure_ascii=False, indent=2))
    text = re.sub(
        r"&quot;#/components/schemas/([A-Za-z0-9_.-]+)&quot;",
        r'&quot;<a href="#schema-\1">#/components/schemas/\1</a>&quot;',
        text,
    )
    return f'<h3 id="schema-{html.escape(name)}">{html.escape(name)}</h3><pre>{text}</pre>'


def render(document: dict[str, Any]) -> str:
    """The whole document as one HTML page."""
    info = document.get("info", {})
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((path, method, item[method]))
    tags = [t for t in document.get("tags", []) if t.get("name") in by_tag]
    tags += [{"name": name} for name in by_tag if name not in {t["name"] for t in tags}]
    nav = "".join(
        f'<li><a href="#{html.escape(op.get("operationId", ""))}"><span class="path">{method.upper()} '
        f'{html.escape(path)}</span></a> <span class="muted">{_inline(op.get("summary", ""))}</span></li>'
        for tag in tags
        for path, method, op in by_tag[tag["name"]]
    )
    sections = []
    for tag in tags:
        title = _inline(tag.get("description", tag["name"]))
        ops = "".join(_operation(document, path, method, op) for path, method, op in by_tag[tag["name"]])
        sections.append(f'<h2 id="tag-{html.escape(tag["name"])}">{title}</h2>{ops}')
    components = document.get("components", {})
    schemes = "".join(
        f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(s.get('type', ''))} "
        f"{html.escape(s.get('scheme', ''))}</td><td>{_inline(s.get('description', ''))}</td></tr>"
        for name, s in components.get("securitySchemes", {}).items()
    )
    schemas = "".join(_schema_block(name, s) for name, s in components.get("schemas", {}).items())
    title = html.escape(info.get("title", "API"))
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body>
<h1>{title} <span class="en">接口文档 API reference · {html.escape(str(info.get("version", "")))}</span></h1>
<p><strong>{_inline(info.get("summary", ""))}</strong></p>
{_text(info.get("description", ""))}
<p>机器可读 Machine-readable: <a href="/api/openapi.json"><code>/api/openapi.json</code></a>
(OpenAPI {html.escape(document.get("openapi", ""))})</p>
<h2 id="auth">认证 Authentication</h2>
<table><tr><th>scheme</th><th>type</th><th>说明 Description</th></tr>{schemes}</table>
<h2 id="toc">接口列表 Operations</h2><nav><ul>{nav}</ul></nav>
{"".join(sections)}
<h2 id="schemas">数据结构 Schemas</h2>
{schemas}
</body></html>
"""


@functools.cache
def docs_html() -> str:
    return render(spec())
