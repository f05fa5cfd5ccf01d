"""Response codes → HTTP statuses: the one place the mapping lives (the codes: registry.errors; the JSON
error body: resolver.http.web.error_body)."""

from __future__ import annotations

from registry import errors as e

__all__ = ["http_status"]

_STATUS = {
    e.RC_SUCCESS: 200,
    e.RC_ERROR: 500,
    e.RC_SERVER_TOO_BUSY: 503,
    e.RC_SERVER_BACKUP: 503,
    e.RC_PROTOCOL_ERROR: 400,
    e.RC_RECURSION_COUNT_TOO_HIGH: 404,  # an alias chain that loops or is too long: nothing to be found
    e.RC_HANDLE_NOT_FOUND: 404,
    e.RC_HANDLE_ALREADY_EXISTS: 409,
    e.RC_INVALID_HANDLE: 400,
    e.RC_VALUES_NOT_FOUND: 400,
    e.RC_VALUE_ALREADY_EXISTS: 409,
    e.RC_INVALID_VALUE: 400,
    e.RC_SERVER_NOT_RESP: 400,
    e.RC_AUTHENTICATION_NEEDED: 401,
    e.RC_NOT_AUTHORIZED: 403,
    e.RC_ACCESS_DENIED: 403,
    e.RC_AUTHENTICATION_FAILED: 403,
    e.RC_INVALID_CREDENTIAL: 403,
}


def http_status(code: int) -> int:
    return _STATUS.get(code, 500)
