"""New secret keys for identities that have one: an enterprise administrator rotating its own, the
node administrator resetting an enterprise's (a lost key, a departed employee).

The new key is drawn here (256 random bits), written hashed through the write service like any
change of the handle that holds it (the same rights, refusal under a disabled enterprise, cache
invalidation), and returned once: it is never stored or logged in clear. From the next request on
the old key fails everywhere, since the credential cache compares the stored hash
(:class:`registry.auth.SecretKeyAuthenticator`)."""

from __future__ import annotations

from dataclasses import replace

from registry.admin_values import SECKEY_INDEX
from registry.audit import audit_record
from registry.auth import Caller
from registry.callers import require_node_admin
from registry.errors import HandleNotFound, PermissionDenied
from registry.model import prefix_handle_of
from registry.namespace import Namespace
from registry.onboarding import Onboarding
from registry.secretkeys import generate_secret
from registry.stores.base import Enterprise
from registry.writes import WriteService

__all__ = ["SecretRotation"]


class SecretRotation:
    """Replaces the HS_SECKEY value of an identity with a new random key."""

    def __init__(self, ns: Namespace, writes: WriteService, onboarding: Onboarding) -> None:
        self.ns = ns
        self.writes = writes
        self.onboarding = onboarding

    async def rotate_own_secret(self, caller: Caller) -> str:
        """A new key for the caller's own identity (its administrator rights on that handle apply).
        Returns the key, shown once."""
        identity = caller.require_authenticated()
        if caller.role == "auditor":
            raise PermissionDenied("the auditor identity cannot write; the node administrator issues a new one")
        return await self._replace(caller, identity.handle, identity.index, "secret.rotate")

    async def reset_enterprise_secret(self, caller: Caller, enterprise: object) -> tuple[Enterprise, str]:
        """The node administrator gives an enterprise's administrator identity (``300:0.NA/<prefix>``)
        a new key. Returns the enterprise and the key, shown once."""
        require_node_admin(caller)
        found = await self.onboarding.find_enterprise(enterprise)
        handle = prefix_handle_of(found.prefix)
        return found, await self._replace(caller, handle, SECKEY_INDEX, "enterprise.reset-secret")

    async def _replace(self, caller: Caller, handle: str, index: int, action: str) -> str:
        name = self.ns.parse(handle)
        record = await self.ns.read_record(name.key)
        current = record.value_at(index) if record is not None else None
        if current is None or current.type.upper() != "HS_SECKEY":
            raise HandleNotFound(f"no secret key at {index}:{handle}", handle)
        secret = generate_secret()
        # The same value (index, permissions, TTL) with the new key in plain text: the write service
        # hashes it in the scrypt pool before anything is stored.
        # Recorded in the audit log with the write (the key itself never).
        audit = audit_record(self.ns, caller, action, f"{index}:{handle}")
        new = [replace(current, data=secret.encode("ascii"))]
        await self.writes.put_handle(caller, name, new, indexes=[index], audit=audit)
        return secret
