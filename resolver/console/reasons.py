"""Why an imported row was rejected, in the page's language.

The job machinery (:mod:`registry.job_run`) keeps each rejected row's Handle response code and the
registry's message, which is English (the API's clients and the node's log read the same words).
An administrator in Guangzhou reads the console in Chinese, so the console names the kind of
failure in the page's language from the response code and keeps the registry's detail after it:
``模板字段不符：line 3: field 'model' does not match …``. The detail stays as the registry wrote it:
it names the column and the value to fix, and it is what support and the API documentation quote.
English pages show the registry's message alone (the kind would only repeat it).
"""

from __future__ import annotations

from promotion_tracker.webpages.locales import translations
from registry.errors import (
    RC_ACCESS_DENIED,
    RC_ERROR,
    RC_HANDLE_ALREADY_EXISTS,
    RC_HANDLE_NOT_FOUND,
    RC_INVALID_HANDLE,
    RC_INVALID_VALUE,
    RC_NOT_AUTHORIZED,
    RC_PROTOCOL_ERROR,
    RC_SERVER_BACKUP,
    RC_SERVER_NOT_RESP,
    RC_SERVER_TOO_BUSY,
    RC_VALUE_ALREADY_EXISTS,
    RC_VALUES_NOT_FOUND,
)
from resolver.console.forms import N_

__all__ = ["reason_kind", "reason_text"]

TEMPLATE_FIELD = N_("Template field does not fit")
KINDS = {
    RC_ERROR: N_("Not registered"),
    RC_PROTOCOL_ERROR: N_("The row could not be read"),
    RC_HANDLE_NOT_FOUND: N_("Not registered"),
    RC_HANDLE_ALREADY_EXISTS: N_("Already registered"),
    RC_INVALID_HANDLE: N_("Not a valid identifier"),
    RC_VALUES_NOT_FOUND: N_("A value is missing"),
    RC_VALUE_ALREADY_EXISTS: N_("A value is there already"),
    RC_INVALID_VALUE: N_("A value is not valid"),
    RC_NOT_AUTHORIZED: N_("Outside your prefix"),
    RC_ACCESS_DENIED: N_("Outside your prefix"),
    RC_SERVER_TOO_BUSY: N_("The node was busy"),
    RC_SERVER_BACKUP: N_("The node was busy"),
    RC_SERVER_NOT_RESP: N_("The node was busy"),
}
SEPARATORS = {"zh": "："}


def reason_kind(code: int, message: str) -> str:
    """The English message id of the failure's kind: by response code, and for an invalid value
    whether it broke a template field's rule (the templates' checks name ``field 'x'``)."""
    if code == RC_INVALID_VALUE and "field '" in message:
        return TEMPLATE_FIELD
    return KINDS.get(code, N_("Not registered"))


def reason_text(locale: str, code: int, message: str) -> str:
    """The reason as the page shows it: ``<kind>：<detail>`` in Chinese, the registry's message in English."""
    if locale == "en":
        return message
    kind = translations(locale).gettext(reason_kind(code, message))
    return f"{kind}{SEPARATORS.get(locale, ': ')}{message}"
