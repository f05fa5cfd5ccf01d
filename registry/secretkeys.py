"""Secret keys (HS_SECKEY) are stored only as salted scrypt hashes.

The stored value data is ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``. Verification is deliberately
slow, so callers cache successful checks (see ``registry.auth``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets as _secrets

__all__ = ["generate_secret", "hash_secret", "is_hashed", "verify_secret"]

_N, _R, _P = 2**14, 8, 1
_PREFIX = "scrypt$"


def generate_secret() -> str:
    """A new random secret key, URL-safe, 256 bits."""
    return _secrets.token_urlsafe(32)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_secret(secret: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=64 * 1024 * 1024)
    return f"{_PREFIX}{n}${r}${p}${_b64(salt)}${_b64(digest)}"


def is_hashed(data: str) -> bool:
    return data.startswith(_PREFIX)


def verify_secret(secret: str, stored: str) -> bool:
    """Constant-time check of ``secret`` against a stored hash; False for anything malformed."""
    try:
        _, n, r, p, salt, digest = stored.split("$")
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            secret.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=64 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)
