"""The values that make a handle administrable, and where they go: HS_ADMIN at index 100, the
HS_VLIST of a prefix's administrators at 200 and the secret key at 300, hashed in the scrypt pool
(never stored in clear, never hashed on the event loop)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from registry import valuedata
from registry.auth import Caller
from registry.errors import InvalidValue
from registry.model import ADMIN_READ, ADMIN_WRITE, HandleValue, Reference
from registry.secretkeys import SecretHasher, check_client_hash, is_hashed

__all__ = [
    "ADMIN_GROUP_INDEX",
    "ADMIN_INDEX",
    "DEFAULT_HANDLE_ADMIN_PERMS",
    "ENTERPRISE_PERMS",
    "SECKEY_INDEX",
    "SITE_INDEX",
    "admin_group_value",
    "admin_value",
    "default_admin",
    "hash_secrets",
    "seckey_value",
]

ADMIN_INDEX = 100
ADMIN_GROUP_INDEX = 200  # HS_VLIST of the prefix's administrators, as HANDLE.NET lays prefixes out
SECKEY_INDEX = 300
SITE_INDEX = 1
# What an enterprise admin may do on its own prefix handle and on the handles it creates.
ENTERPRISE_PERMS = valuedata.ALL_PERMS & ~(valuedata.ADD_DERIVED_PREFIX | valuedata.DELETE_DERIVED_PREFIX)
DEFAULT_HANDLE_ADMIN_PERMS = ENTERPRISE_PERMS


def admin_value(admin_handle: str, perms: int, now: int) -> HandleValue:
    """HS_ADMIN at index 100 naming ``300:<admin_handle>``."""
    data = valuedata.encode_admin(admin_handle, SECKEY_INDEX, perms)
    return HandleValue(index=ADMIN_INDEX, type="HS_ADMIN", data=data, timestamp=now)


def default_admin(caller: Caller, now: int) -> HandleValue:
    """The HS_ADMIN a new handle written without one gets: the caller's own identity."""
    identity = caller.require_authenticated()
    data = valuedata.encode_admin(identity.handle, identity.index, DEFAULT_HANDLE_ADMIN_PERMS)
    return HandleValue(index=ADMIN_INDEX, type="HS_ADMIN", data=data, timestamp=now)


def admin_group_value(prefix_handle: str, now: int) -> HandleValue:
    """``200:0.NA/<prefix>`` names the prefix's admins: clients such as pyhandle write
    HS_ADMIN values naming it by default."""
    data = valuedata.encode_vlist([Reference(prefix_handle, SECKEY_INDEX)])
    return HandleValue(index=ADMIN_GROUP_INDEX, type="HS_VLIST", data=data, timestamp=now)


async def seckey_value(hasher: SecretHasher, secret: str, now: int) -> HandleValue:
    """The hashed secret key at index 300, readable by administrators only."""
    data = (await hasher.hash(secret)).encode("ascii")
    return HandleValue(SECKEY_INDEX, "HS_SECKEY", data, timestamp=now, permissions=ADMIN_READ | ADMIN_WRITE)


async def hash_secrets(hasher: SecretHasher, values: Sequence[HandleValue]) -> Sequence[HandleValue]:
    """Values as a client sent them, with every plain-text HS_SECKEY hashed (in the scrypt pool,
    never on the event loop). A pre-hashed one must be exactly what this node would make
    (``check_client_hash``): the node alone chooses the scrypt parameters (202 otherwise)."""
    if not any(v.type.upper() == "HS_SECKEY" for v in values):
        return values
    out = []
    for v in values:
        if v.type.upper() == "HS_SECKEY":
            try:
                text = v.data.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidValue(f"HS_SECKEY at index {v.index} must be text") from None
            if not text:
                raise InvalidValue(f"HS_SECKEY at index {v.index} is empty")
            if is_hashed(text):
                check_client_hash(text, f"HS_SECKEY at index {v.index}")
            else:
                v = replace(v, data=(await hasher.hash(text)).encode("ascii"))
        out.append(v)
    return out
