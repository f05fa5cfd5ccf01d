"""The one parser of HTTP Basic credentials, shared by authentication and the access log.

The user name is the identity ``index:handle``: pyhandle percent-encodes it as a whole
(``300%3A0.NA%2F88.118.8``); sent raw (``300:0.NA/88.118.8:secret``) it is split at its own ``:``.
Anything malformed (not base64, not UTF-8, a percent-encoding of invalid UTF-8) is an
:class:`~registry.errors.InvalidCredential`, never an unhandled error, and no message echoes what
was sent (a secret typed into the wrong field must not come back).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote

from registry.errors import InvalidCredential
from registry.inputs import is_uint_text

__all__ = ["BasicCredentials", "parse_basic"]


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    identity: str  # as claimed, not yet checked against Identity.parse
    secret: str


def parse_basic(param: str) -> BasicCredentials:
    """The identity and secret of ``Authorization: Basic <param>``."""
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidCredential("malformed Basic credentials (base64 of UTF-8 user:password expected)") from None
    user, sep, rest = decoded.partition(":")
    if not sep:
        raise InvalidCredential("malformed Basic credentials (user:password expected)")
    if "%" in user:
        try:
            identity = unquote(user, errors="strict")
        except UnicodeDecodeError:
            raise InvalidCredential("the identity (user name) is percent-encoded but not UTF-8") from None
        return BasicCredentials(identity, rest)
    if is_uint_text(user) and ":" in rest:
        handle, _, secret = rest.partition(":")
        return BasicCredentials(f"{user}:{handle}", secret)
    return BasicCredentials(user, rest)
