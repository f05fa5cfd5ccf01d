"""Metadata templates (数据模板): which values an identifier of a kind must carry.

A template has an id, a version and fields. A field names an index (>= 2000), a value type and
checks on its data (required, length, pattern or enumeration). Fields are never deleted: a new
version keeps every field of the previous one and may disable some. An identifier opts in with a
value at index 1001 of type ``TEMPLATE`` whose data is ``<id>@<version>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from registry.errors import InvalidRequest, InvalidValue
from registry.inputs import MAX_U32, as_uint
from registry.model import HandleValue

__all__ = [
    "FIELD_MIN_INDEX",
    "TEMPLATE_INDEX",
    "TEMPLATE_TYPE",
    "Template",
    "TemplateField",
    "is_template_id",
    "parse_template_ref",
    "parse_version",
    "template_from_json",
    "validate_against",
]

TEMPLATE_INDEX = 1001
TEMPLATE_TYPE = "TEMPLATE"
FIELD_MIN_INDEX = 2000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_FIELDS = 200
MAX_VERSION = 2**31 - 1


@dataclass(frozen=True)
class TemplateField:
    index: int
    name: str
    type: str
    required: bool = False
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    disabled: bool = False

    def check(self, value: HandleValue, where: str) -> None:
        if value.type.upper() != self.type.upper():  # types compare case-insensitively, as elsewhere
            raise InvalidValue(f"{where}: field {self.name!r} (index {self.index}) must have type {self.type}")
        try:
            text = value.data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValue(f"{where}: field {self.name!r} must be UTF-8 text") from None
        if self.min_length is not None and len(text) < self.min_length:
            raise InvalidValue(f"{where}: field {self.name!r} shorter than {self.min_length} characters")
        if self.max_length is not None and len(text) > self.max_length:
            raise InvalidValue(f"{where}: field {self.name!r} longer than {self.max_length} characters")
        if self.pattern is not None and not _compiled(self.pattern).fullmatch(text):
            raise InvalidValue(f"{where}: field {self.name!r} does not match {self.pattern!r}")
        if self.enum is not None and text not in self.enum:
            raise InvalidValue(f"{where}: field {self.name!r} must be one of {', '.join(self.enum)}")


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        compiled = _PATTERNS[pattern] = re.compile(pattern)
    return compiled


@dataclass(frozen=True)
class Template:
    id: str
    version: int
    scope: str  # "" for node-wide, else the normalised enterprise prefix
    fields: tuple[TemplateField, ...] = field(default_factory=tuple)
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "scope": self.scope or "node",
            "description": self.description,
            "fields": [{k: v for k, v in asdict(f).items() if v is not None} for f in self.fields],
        }

    def fields_json(self) -> str:
        return json.dumps(
            {"description": self.description, "fields": [asdict(f) for f in self.fields]}, ensure_ascii=False
        )

    @classmethod
    def from_stored(cls, id: str, version: int, scope: str, blob: str) -> Template:
        data = json.loads(blob)
        fields = tuple(
            TemplateField(**{**f, "enum": tuple(f["enum"]) if f.get("enum") is not None else None})
            for f in data["fields"]
        )
        return cls(id, version, scope, fields, data.get("description", ""))


def _nested_repeat(pattern: str) -> bool:
    """Does the pattern put an unbounded repetition, or an alternation, inside an unbounded
    repetition? Those are the patterns Python's backtracking matcher can take exponential time on
    (ReDoS), and a template's pattern is written by an enterprise but run by the node. The rule
    also refuses some safe patterns such as ``(ab|cd)*``; template patterns rarely need them."""
    import re._parser as sre  # the stdlib's own parser of patterns

    repeats = {sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", None)}

    def walk(items: Any, inside: bool) -> bool:
        for op, arg in items:
            if op in repeats:
                _low, high, sub = arg
                unbounded = high == sre.MAXREPEAT or high > 10
                if inside and unbounded:
                    return True
                if walk(sub, inside or unbounded):
                    return True
            elif op in (sre.SUBPATTERN,):
                if walk(arg[-1], inside):
                    return True
            elif op is sre.BRANCH:
                if inside:  # alternatives under repetition can overlap: (a|aa)+
                    return True
                if any(walk(branch, inside) for branch in arg[1]):
                    return True
            elif op in (sre.ASSERT, sre.ASSERT_NOT) and walk(arg[1], inside):
                return True
        return False

    try:
        return walk(sre.parse(pattern), False)
    except Exception:  # unparseable here means refused by re.compile already
        return True


def _opt_int(raw: Any, what: str) -> int | None:
    if raw is None:
        return None
    if not isinstance(raw, int):  # a JSON number, not a string of digits (bools are refused below)
        raise InvalidRequest(f"{what} must be a non-negative integer")
    return as_uint(raw, what, maximum=MAX_U32)


def _field_from_json(obj: Any, n: int) -> TemplateField:
    where = f"field {n}"
    if not isinstance(obj, dict):
        raise InvalidRequest(f"{where}: must be an object")
    unknown = set(obj) - {
        "index",
        "name",
        "type",
        "required",
        "min_length",
        "max_length",
        "pattern",
        "enum",
        "disabled",
    }
    if unknown:
        raise InvalidRequest(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    index = obj.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or not FIELD_MIN_INDEX <= index <= 0xFFFFFFFF:
        raise InvalidRequest(f"{where}: index must be an integer >= {FIELD_MIN_INDEX}")
    name, type_ = obj.get("name"), obj.get("type")
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise InvalidRequest(f"{where}: name must be a non-empty string of at most 64 characters")
    if not isinstance(type_, str) or not type_.strip() or len(type_) > 255:
        raise InvalidRequest(f"{where}: type must be a non-empty string")
    pattern = obj.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str) or len(pattern) > 500:
            raise InvalidRequest(f"{where}: pattern must be a string of at most 500 characters")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InvalidRequest(f"{where}: invalid pattern: {exc}") from None
        if _nested_repeat(pattern):
            raise InvalidRequest(
                f"{where}: pattern repeats a group holding a repetition or an alternation (like (a+)+ or "
                "(a|aa)+): such patterns can take exponential time"
            )
    enum = obj.get("enum")
    if enum is not None and (
        not isinstance(enum, list) or not enum or len(enum) > 1000 or not all(isinstance(x, str) for x in enum)
    ):
        raise InvalidRequest(f"{where}: enum must be a non-empty list of strings")
    lo, hi = (
        _opt_int(obj.get("min_length"), f"{where}: min_length"),
        _opt_int(obj.get("max_length"), f"{where}: max_length"),
    )
    if lo is not None and hi is not None and lo > hi:
        raise InvalidRequest(f"{where}: min_length > max_length")
    for flag in ("required", "disabled"):
        if not isinstance(obj.get(flag, False), bool):
            raise InvalidRequest(f"{where}: {flag} must be true or false")
    return TemplateField(
        index=index,
        name=name.strip(),
        type=type_.strip(),
        required=obj.get("required", False),
        min_length=lo,
        max_length=hi,
        pattern=pattern,
        enum=tuple(enum) if enum is not None else None,
        disabled=obj.get("disabled", False),
    )


def template_from_json(obj: Any, *, id: str, version: int, scope: str, previous: Template | None) -> Template:
    """A new version from its JSON body; every field of ``previous`` must still be there."""
    if not isinstance(obj, dict):
        raise InvalidRequest("a template is a JSON object with 'fields'")
    if not is_template_id(id):
        raise InvalidRequest("template id: 1-64 characters of letters, digits, '_', '.', '-'")
    raw_fields = obj.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields or len(raw_fields) > MAX_FIELDS:
        raise InvalidRequest(f"fields must be a non-empty list of at most {MAX_FIELDS}")
    fields = tuple(_field_from_json(f, n) for n, f in enumerate(raw_fields))
    indexes = [f.index for f in fields]
    names = [f.name for f in fields]
    if len(set(indexes)) != len(indexes) or len(set(names)) != len(names):
        raise InvalidRequest("field indexes and names must be unique")
    if previous is not None:
        now = {f.index: f for f in fields}
        for old in previous.fields:
            if old.index not in now:
                raise InvalidRequest(
                    f"field {old.name!r} (index {old.index}) of version {previous.version} is missing: "
                    "fields can be disabled but not deleted"
                )
    description = obj.get("description", "")
    if not isinstance(description, str) or len(description) > 1000:
        raise InvalidRequest("description must be a string of at most 1000 characters")
    return Template(id, version, scope, tuple(sorted(fields, key=lambda f: f.index)), description)


def parse_template_ref(value: HandleValue, where: str) -> tuple[str, int]:
    """``sku-basic@2`` → (``sku-basic``, 2)."""
    try:
        text = value.data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidValue(f"{where}: template reference must be text <id>@<version>") from None
    ident, sep, version = text.strip().rpartition("@")
    number = parse_version(version)
    if not sep or not is_template_id(ident) or number is None:
        raise InvalidValue(f"{where}: template reference must be <id>@<version>, got {text[:80]!r}")
    return ident, number


def is_template_id(text: object) -> bool:
    """1-64 letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit."""
    return isinstance(text, str) and _ID.fullmatch(text) is not None


def parse_version(text: str) -> int | None:
    """A version number: ASCII digits (``str.isdigit`` also accepts ``²`` and ``١``), at most
    MAX_VERSION (the stores keep it in a 32-bit column). None when ``text`` is not one."""
    if not text or len(text) > 10 or not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if number <= MAX_VERSION else None


def validate_against(template: Template, values: Sequence[HandleValue], where: str) -> None:
    """Raise InvalidValue unless ``values`` satisfy ``template``."""
    by_index = {v.index: v for v in values}
    fields = {f.index: f for f in template.fields}
    for f in template.fields:
        v = by_index.get(f.index)
        if v is None:
            if f.required and not f.disabled:
                raise InvalidValue(f"{where}: required field {f.name!r} (index {f.index}) is missing")
            continue
        if f.disabled:
            raise InvalidValue(f"{where}: field {f.name!r} is disabled in {template.id}@{template.version}")
        f.check(v, where)
    for index in by_index:
        if index >= FIELD_MIN_INDEX and index not in fields:
            raise InvalidValue(f"{where}: index {index} is not a field of template {template.id}@{template.version}")
