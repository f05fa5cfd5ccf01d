"""What people type into the console's forms, read and checked before anything is written.

Pure functions and small dataclasses, no I/O: the identity field of the sign-in form, text fields
with their limits, and the identifier form generated from a metadata template (field names,
required fields, lengths, patterns and enumerations checked field by field, so every error shows
next to its field). The registry checks everything again when it writes; these checks are for
the person filling the form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from registry.admin_values import SECKEY_INDEX
from registry.auth import Identity
from registry.errors import HandleError, InvalidCredential
from registry.model import HandleValue
from registry.templates import TEMPLATE_INDEX, TEMPLATE_TYPE, Template, TemplateField

__all__ = [
    "N_",
    "URL_INDEX",
    "FormErrors",
    "IdentifierForm",
    "identity_from_text",
    "read_identifier_form",
    "text_field",
]

URL_INDEX = 1  # the landing page of an identifier (type URL), as `idnode import` writes it
MAX_TEXT = 2000  # characters of any one form field the console reads
MAX_IDENTITY = 300

FormErrors = dict[str, str]  # field name → message (English message id, translated by the page)


def N_(message: str) -> str:
    """Marks a message for the console's catalogue; the page translates it when it shows it."""
    return message


def text_field(form: Mapping[str, object], name: str, limit: int = MAX_TEXT) -> str:
    """A form field as stripped text; "" when absent, not text (a file) or longer than ``limit``
    (the page then reports it missing or wrong rather than storing a cut value)."""
    raw = form.get(name)
    if not isinstance(raw, str) or len(raw) > limit:
        return ""
    return raw.strip()


def identity_from_text(text: str) -> Identity:
    """The sign-in form's identity: ``300:0.NA/88.118.8.1001``, ``300:88.118.8.1001`` or the prefix
    alone (``88.118.8.1001``, index 300: the key an enterprise gets at onboarding); a handle with a
    suffix (``300:88.118.8/auditor/baiyun``) names that handle. InvalidCredential otherwise."""
    text = text.strip()
    if not text or len(text) > MAX_IDENTITY:
        raise InvalidCredential("enter an identity such as 88.118.8.1001 or 300:0.NA/88.118.8.1001")
    index, sep, rest = text.partition(":")
    if not sep or not index.isascii() or not index.isdigit():
        index, rest = str(SECKEY_INDEX), text
    handle = rest if "/" in rest else f"0.NA/{rest}"
    return Identity.parse(f"{index}:{handle}")


@dataclass(frozen=True)
class IdentifierForm:
    """The identifier form as filled in: the suffix, the landing page URL and the template's fields."""

    suffix: str = ""
    url: str = ""
    fields: dict[str, str] = field(default_factory=dict)  # field name → text
    errors: FormErrors = field(default_factory=dict)
    version: str = ""  # the record version an edit started from

    def values(self, template: Template | None) -> list[HandleValue]:
        """The values this form writes (URL at 1, the template reference at 1001, fields at 2000+)."""
        out: list[HandleValue] = []
        if self.url:
            out.append(HandleValue(URL_INDEX, "URL", self.url.encode("utf-8")))
        if template is not None:
            ref = f"{template.id}@{template.version}".encode()
            out.append(HandleValue(TEMPLATE_INDEX, TEMPLATE_TYPE, ref))
            for f in active_fields(template):
                text = self.fields.get(f.name, "")
                if text:
                    out.append(HandleValue(f.index, f.type, text.encode("utf-8")))
        return out


def active_fields(template: Template) -> list[TemplateField]:
    return [f for f in template.fields if not f.disabled]


def _check_field(f: TemplateField, text: str) -> str | None:
    """The message for a field's value, or None when it is fine (the template's own check decides)."""
    if not text:
        return N_("This field is required.") if f.required else None
    try:
        f.check(HandleValue(f.index, f.type, text.encode("utf-8")), "form")
    except HandleError:
        if f.enum is not None and text not in f.enum:
            return N_("Choose one of the listed values.")
        if f.min_length is not None and len(text) < f.min_length:
            return N_("Too short.")
        if f.max_length is not None and len(text) > f.max_length:
            return N_("Too long.")
        return N_("Does not match the required pattern.")
    return None


def read_identifier_form(
    form: Mapping[str, object], template: Template | None, *, editing: bool = False
) -> IdentifierForm:
    """The identifier form from a POST, each field checked (errors keyed by field name)."""
    errors: FormErrors = {}
    suffix = text_field(form, "suffix", 255)
    if not editing:
        if not suffix:
            errors["suffix"] = N_("This field is required.")
        elif any(ord(c) < 32 or ord(c) == 127 for c in suffix):
            errors["suffix"] = N_("No control characters.")
    url = text_field(form, "url")
    if url and not (url.startswith("https://") or url.startswith("http://")):
        errors["url"] = N_("A web address starting with https:// or http://.")
    values: dict[str, str] = {}
    for f in active_fields(template) if template is not None else []:
        text = text_field(form, f"field_{f.index}")
        values[f.name] = text
        message = _check_field(f, text)
        if message is not None:
            errors[f"field_{f.index}"] = message
    if template is None and not url:
        errors["url"] = N_("Give a URL, or choose a template.")
    return IdentifierForm(suffix, url, values, errors, text_field(form, "version", 20))


def form_of_record(
    values: tuple[HandleValue, ...], template: Template | None, suffix: str, version: int
) -> IdentifierForm:
    """The form pre-filled from an identifier's values (for editing)."""
    by_index = {v.index: v for v in values}
    url_value = by_index.get(URL_INDEX)
    url = url_value.data.decode("utf-8", "replace") if url_value is not None and url_value.type == "URL" else ""
    fields = {}
    for f in active_fields(template) if template is not None else []:
        v = by_index.get(f.index)
        fields[f.name] = v.data.decode("utf-8", "replace") if v is not None else ""
    return IdentifierForm(suffix, url, fields, {}, str(version))
