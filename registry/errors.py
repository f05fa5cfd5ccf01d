"""Errors of the registry, each carrying its Handle System response code.

The HTTP status of each code lives in one place on the network side (``resolver.http.statuses``); code here
only raises.
"""

from __future__ import annotations

__all__ = [
    "RC_ACCESS_DENIED",
    "RC_AUTHENTICATION_FAILED",
    "RC_AUTHENTICATION_NEEDED",
    "RC_ERROR",
    "RC_HANDLE_ALREADY_EXISTS",
    "RC_HANDLE_NOT_FOUND",
    "RC_INVALID_CREDENTIAL",
    "RC_INVALID_HANDLE",
    "RC_INVALID_VALUE",
    "RC_NOT_AUTHORIZED",
    "RC_OPERATION_NOT_SUPPORTED",
    "RC_PREFIX_REFERRAL",
    "RC_PROTOCOL_ERROR",
    "RC_RECURSION_COUNT_TOO_HIGH",
    "RC_RESERVED",
    "RC_SERVER_BACKUP",
    "RC_SERVER_NOT_RESP",
    "RC_SERVER_TOO_BUSY",
    "RC_SERVICE_REFERRAL",
    "RC_SUCCESS",
    "RC_VALUES_NOT_FOUND",
    "RC_VALUE_ALREADY_EXISTS",
    "AuthenticationNeeded",
    "HandleAlreadyExists",
    "HandleError",
    "HandleNotFound",
    "InvalidCredential",
    "InvalidHandle",
    "InvalidRequest",
    "InvalidValue",
    "NotResponsible",
    "PermissionDenied",
    "ServerBusy",
    "ServerError",
    "StoreInUse",
    "StoreTooNew",
    "StoreUnavailable",
    "TooManyAliases",
    "ValueAlreadyExists",
    "ValuesNotFound",
]

# Response codes (RFC 3652 section 2.2.2.2; HANDLE.NET AbstractMessage.RC_*): the one table of them, for
# the HTTP API (statuses in resolver.http.statuses) and the native protocol (resolver.native) alike.
RC_RESERVED = 0  # the code of a request: a response carries any other
RC_SUCCESS = 1
RC_ERROR = 2
RC_SERVER_TOO_BUSY = 3
RC_PROTOCOL_ERROR = 4
RC_OPERATION_NOT_SUPPORTED = 5
RC_RECURSION_COUNT_TOO_HIGH = 6
RC_SERVER_BACKUP = 7  # the server is being backed up: try later
RC_HANDLE_NOT_FOUND = 100
RC_HANDLE_ALREADY_EXISTS = 101
RC_INVALID_HANDLE = 102
RC_VALUES_NOT_FOUND = 200
RC_VALUE_ALREADY_EXISTS = 201
RC_INVALID_VALUE = 202
RC_SERVER_NOT_RESP = 301
RC_SERVICE_REFERRAL = 302
RC_PREFIX_REFERRAL = 303
RC_NOT_AUTHORIZED = 400  # HANDLE.NET RC_INVALID_ADMIN
RC_ACCESS_DENIED = 401  # HANDLE.NET RC_INSUFFICIENT_PERMISSIONS
RC_AUTHENTICATION_NEEDED = 402
RC_AUTHENTICATION_FAILED = 403
RC_INVALID_CREDENTIAL = 404


class HandleError(Exception):
    """Base class: a failure with a Handle response code and a message fit for the client."""

    code: int = RC_ERROR

    def __init__(self, message: str, handle: str | None = None, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.handle = handle
        if code is not None:
            self.code = code


class ServerError(HandleError):
    code = RC_ERROR


class StoreUnavailable(HandleError):
    """The store cannot be reached; the write was not made (responseCode 3, HTTP 503)."""

    code = RC_SERVER_TOO_BUSY


class StoreTooNew(StoreUnavailable):
    """The store's schema was written by a newer idnode than this one: it is not opened (an older
    node would misread or damage what the newer one added)."""


class StoreInUse(StoreUnavailable):
    """The store is open in a running node or command, so it cannot be replaced (``idnode restore``)."""


class ServerBusy(HandleError):
    """Too much work queued to take this request now (responseCode 3, HTTP 503); the client should
    retry after ``retry_after`` seconds."""

    code = RC_SERVER_TOO_BUSY

    def __init__(self, message: str, handle: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message, handle)
        self.retry_after = retry_after


class InvalidRequest(HandleError):
    code = RC_PROTOCOL_ERROR


class HandleNotFound(HandleError):
    code = RC_HANDLE_NOT_FOUND


class HandleAlreadyExists(HandleError):
    code = RC_HANDLE_ALREADY_EXISTS


class InvalidHandle(HandleError):
    code = RC_INVALID_HANDLE


class ValuesNotFound(HandleError):
    code = RC_VALUES_NOT_FOUND


class ValueAlreadyExists(HandleError):
    code = RC_VALUE_ALREADY_EXISTS


class InvalidValue(HandleError):
    code = RC_INVALID_VALUE


class TooManyAliases(HandleError):
    """An HS_ALIAS chain that loops, or is longer than the node follows (responseCode 6, HTTP 404
    as HANDLE.NET's proxy answers "Alias chain too long")."""

    code = RC_RECURSION_COUNT_TOO_HIGH


class NotResponsible(HandleError):
    code = RC_SERVER_NOT_RESP


class AuthenticationNeeded(HandleError):
    code = RC_AUTHENTICATION_NEEDED


class InvalidCredential(AuthenticationNeeded):
    """Wrong, unknown or malformed credentials. Answered like missing ones (responseCode 402, HTTP
    401 with fresh challenges): HANDLE.NET's HTTP authentication filter answers every failed
    authentication with 401, and pyhandle reports 401 or 402 as HandleAuthenticationError."""


class PermissionDenied(HandleError):
    code = RC_NOT_AUTHORIZED
