"""The template form of the operator's pages, read and checked before anything is written.

A template is an id, a description and rows of fields; each row is an index (2000 and up), a name,
a value type, whether it is required, length limits, a pattern and an enumeration (and, in a new
version, whether an earlier field is disabled). Every problem is keyed by its row and input so the
page shows it beside that input. The checks are the registry's own (:func:`registry.templates.
template_from_json`), run row by row; its messages come back for anything the console has no
words of its own for. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registry.errors import InvalidRequest
from registry.inputs import MAX_U32
from registry.templates import FIELD_MIN_INDEX, MAX_FIELDS, Template, is_template_id, template_from_json
from resolver.console.forms import N_, FormErrors, text_field

__all__ = ["MAX_ROWS", "Row", "TemplateForm", "blank_rows", "form_of_template", "read_template_form"]

MAX_ROWS = MAX_FIELDS
INPUTS = ("index", "name", "type", "min", "max", "pattern", "enum")
FLAGS = ("required", "disabled")
_INPUT_OF = {"min_length": "min", "max_length": "max"}  # the API's key → the form's input


@dataclass
class Row:
    """One field as typed in (text as typed; flags as ticked); ``kept``: a field of the earlier version."""

    values: dict[str, str] = field(default_factory=lambda: dict.fromkeys(INPUTS, ""))
    flags: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(FLAGS, False))
    kept: bool = False

    def blank(self) -> bool:
        return not self.kept and not any(self.values.values())


@dataclass
class TemplateForm:
    id: str = ""
    description: str = ""
    rows: list[Row] = field(default_factory=list)
    errors: FormErrors = field(default_factory=dict)  # "id", "description", "rows", "f<n>-<input>"
    body: dict[str, Any] = field(default_factory=dict)  # what the API would have been sent

    @property
    def ok(self) -> bool:
        return not self.errors


def blank_rows(n: int) -> list[Row]:
    return [Row() for _ in range(n)]


def form_of_template(template: Template, extra: int = 1) -> TemplateForm:
    """A new version's form: the template's fields (kept, as they are) and ``extra`` blank rows."""
    rows = []
    for f in template.fields:
        values = {
            "index": str(f.index),
            "name": f.name,
            "type": f.type,
            "min": "" if f.min_length is None else str(f.min_length),
            "max": "" if f.max_length is None else str(f.max_length),
            "pattern": f.pattern or "",
            "enum": ", ".join(f.enum) if f.enum is not None else "",
        }
        rows.append(Row(values, {"required": f.required, "disabled": f.disabled}, kept=True))
    return TemplateForm(template.id, template.description, rows + blank_rows(extra))


def _count(form: Mapping[str, object]) -> int:
    raw = text_field(form, "rows", 4)
    return min(int(raw), MAX_ROWS) if raw.isdigit() else 0


def _uint(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= MAX_U32 else None


def _enum(text: str) -> list[str]:
    return [v.strip() for v in text.replace("，", ",").split(",") if v.strip()]


def _row_json(row: Row, n: int, errors: FormErrors) -> dict[str, Any]:
    """The row as the API's JSON, each input checked (problems under ``f<n>-<input>``)."""
    v, out = row.values, {}
    index = _uint(v["index"])
    if not v["index"]:
        errors[f"f{n}-index"] = N_("This field is required.")
    elif index is None or index < FIELD_MIN_INDEX:
        errors[f"f{n}-index"] = N_("A whole number from 2000 up.")
    out["index"] = index
    for name, limit in (("name", 64), ("type", 255)):
        if not v[name]:
            errors[f"f{n}-{name}"] = N_("This field is required.")
        elif len(v[name]) > limit or not v[name].isprintable():
            errors[f"f{n}-{name}"] = N_("Too long.") if len(v[name]) > limit else N_("No control characters.")
        out[name] = v[name]
    out["required"], out["disabled"] = row.flags["required"], row.flags["disabled"]
    for name, key in (("min", "min_length"), ("max", "max_length")):
        if v[name]:
            number = _uint(v[name])
            if number is None:
                errors[f"f{n}-{name}"] = N_("A whole number, 0 or more.")
            out[key] = number
    low, high = out.get("min_length"), out.get("max_length")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        errors[f"f{n}-max"] = N_("At least the shortest length.")
    if v["pattern"]:
        out["pattern"] = v["pattern"]
    if v["enum"]:
        out["enum"] = _enum(v["enum"])
        if not out["enum"]:
            errors[f"f{n}-enum"] = N_("Values separated by commas.")
    # The registry's own checks on this row alone, with stand-ins for the inputs found wrong above,
    # so that a pattern or a list of values is checked even when another input of the row is not.
    probe = {k: val for k, val in out.items() if f"f{n}-{_INPUT_OF.get(k, k)}" not in errors}
    probe = {"index": FIELD_MIN_INDEX, "name": "x", "type": "X", **probe}
    if not any(k.startswith(f"f{n}-") and k.rpartition("-")[2] in ("name", "pattern", "enum") for k in errors):
        try:
            template_from_json({"fields": [probe]}, id="row", version=1, scope="", previous=None)
        except InvalidRequest as exc:
            message = exc.message.removeprefix("field 0: ")
            if "pattern" in message:
                errors[f"f{n}-pattern"] = (
                    N_("A repetition inside a repetition, such as (a+)+, can take exponential time.")
                    if "exponential" in message
                    else N_("Not a regular expression this node can read.")
                )
            else:
                errors[f"f{n}-name"] = message
    return out


def read_template_form(form: Mapping[str, object], *, new: bool) -> TemplateForm:
    """The template form from a POST, every row checked; ``body`` is the JSON the API takes."""
    out = TemplateForm(id=text_field(form, "id", 100), description=text_field(form, "description", 1100))
    if new:
        if not out.id:
            out.errors["id"] = N_("This field is required.")
        elif not is_template_id(out.id):
            out.errors["id"] = N_("1–64 letters, digits, '_', '.' or '-', starting with a letter or digit.")
    if len(out.description) > 1000:
        out.errors["description"] = N_("At most 1,000 characters.")
    for n in range(_count(form)):
        values = {name: text_field(form, f"f{n}-{name}", 600) for name in INPUTS}
        flags = {name: text_field(form, f"f{n}-{name}", 10) == "on" for name in FLAGS}
        out.rows.append(Row(values, flags, kept=text_field(form, f"f{n}-kept", 2) == "1"))
    fields, seen_index, seen_name = [], {}, {}
    for n, row in enumerate(out.rows):
        if row.blank():
            continue
        body = _row_json(row, n, out.errors)
        fields.append(body)
        for key, seen in (("index", seen_index), ("name", seen_name)):
            if body.get(key) is not None and body[key] != "":
                if body[key] in seen:
                    out.errors.setdefault(f"f{n}-{key}", N_("Another field has it already."))
                seen[body[key]] = n
    if not fields:
        out.errors["rows"] = N_("Give at least one field.")
    out.body = {"fields": fields, "description": out.description}
    return out
