"""A template field's value for a label (``field=name``): e.g. the product name printed under the code.

The record's index-1001 TEMPLATE value names its template (``id@version``); the field of that name gives
the value's index. Only a UTF-8 value anyone is served (registry.read_policy) is printed: labels go on
products. The enterprise's own template wins over a node-wide one of the same id and version, as when the
record was written.
"""

from __future__ import annotations

from registry.errors import HandleError
from registry.model import Record
from registry.read_policy import ValueFilter, served_values
from registry.service import Registry
from registry.templates import TEMPLATE_INDEX, TEMPLATE_TYPE, Template, parse_template_ref

__all__ = ["FieldReader"]


class FieldReader:
    """Reads one named field from records of one prefix; templates are looked up once per sheet."""

    def __init__(self, registry: Registry, prefix: str, name: str) -> None:
        self.registry = registry
        self.prefix = prefix  # normalised
        self.name = name
        self._fields: dict[tuple[str, int], ValueFilter | None] = {}  # template -> the field's index

    async def value(self, record: Record) -> str | None:
        ref = record.value_at(TEMPLATE_INDEX)
        if ref is None or ref.type.upper() != TEMPLATE_TYPE:
            return None
        try:
            key = parse_template_ref(ref, record.handle)
        except HandleError:
            return None
        if key not in self._fields:
            template = await self._template(*key)
            field = next((f for f in template.fields if f.name == self.name), None) if template else None
            self._fields[key] = ValueFilter(indexes=frozenset({field.index})) if field is not None else None
        wanted = self._fields[key]
        # What registry.read_policy serves anyone: labels go on products.
        served = served_values(record.values, private_reader=False, request=wanted) if wanted is not None else ()
        if not served:
            return None
        value = served[0]
        try:
            text = value.data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return " ".join(text.split()) or None  # one line: no newlines or tabs on a label

    async def _template(self, template_id: str, version: int) -> Template | None:
        own = await self.registry.template(self.prefix, template_id, version)
        return own or await self.registry.template("", template_id, version)
