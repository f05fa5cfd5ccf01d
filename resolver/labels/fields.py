"""A template field's value for a label (``field=name``): e.g. the product name printed under the code.

The record's index-1001 TEMPLATE value names its template (``id@version``); the field of that name gives
the value's index. Only a public, UTF-8 value is printed: labels go on products. The enterprise's own
template wins over a node-wide one of the same id and version, as when the record was written.
"""

from __future__ import annotations

from registry.errors import HandleError
from registry.model import Record
from registry.service import Registry
from registry.templates import TEMPLATE_INDEX, TEMPLATE_TYPE, Template, parse_template_ref

__all__ = ["FieldReader"]


class FieldReader:
    """Reads one named field from records of one prefix; templates are looked up once per sheet."""

    def __init__(self, registry: Registry, prefix: str, name: str) -> None:
        self.registry = registry
        self.prefix = prefix  # normalised
        self.name = name
        self._indexes: dict[tuple[str, int], int | None] = {}

    async def value(self, record: Record) -> str | None:
        ref = record.value_at(TEMPLATE_INDEX)
        if ref is None or ref.type.upper() != TEMPLATE_TYPE:
            return None
        try:
            key = parse_template_ref(ref, record.handle)
        except HandleError:
            return None
        if key not in self._indexes:
            template = await self._template(*key)
            field = next((f for f in template.fields if f.name == self.name), None) if template else None
            self._indexes[key] = field.index if field is not None else None
        index = self._indexes[key]
        value = record.value_at(index) if index is not None else None
        if value is None or not value.public_read:
            return None
        try:
            text = value.data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return " ".join(text.split()) or None  # one line: no newlines or tabs on a label

    async def _template(self, template_id: str, version: int) -> Template | None:
        own = await self.registry.template(self.prefix, template_id, version)
        return own or await self.registry.template("", template_id, version)
