"""Ed25519 signatures over canonical JSON: how reports prove they came from this node.

Canonical form: UTF-8 JSON with sorted keys, no insignificant white space, non-ASCII kept as is.
A signed document is ``{"report": …, "signature": {"alg", "key_id", "public_key", "value"}}``;
``value`` signs the canonical form of ``report`` alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "REPORT_KEY_INDEX",
    "REPORT_KEY_TYPE",
    "Signer",
    "VerifyError",
    "canonical_json",
    "key_id",
    "verify_document",
]

ALG = "Ed25519"
# The node publishes its public report key at index 301 of 0.NA/<prefix> as PEM text under a value
# type of its own: HANDLE.NET reads no Ed25519 HS_PUBKEY, and a prefix record a HANDLE.NET top-level
# node may copy must hold only key formats it reads (HS_PUBKEY stays for RSA and DSA keys).
REPORT_KEY_INDEX = 301
REPORT_KEY_TYPE = "IDNODE_REPORT_KEY"


class VerifyError(ValueError):
    """A document whose signature does not hold, or that is not a signed report."""


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint: the first 16 hex digits of SHA-256 over the raw public key."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: str) -> Signer:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the node signing key is not an Ed25519 key")
        return cls(key)

    def to_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def public_jwk(self) -> dict[str, str]:
        x = base64.urlsafe_b64encode(_raw(self.public_key)).rstrip(b"=").decode("ascii")
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": key_id(self.public_key)}

    def sign(self, report: dict[str, Any]) -> dict[str, Any]:
        signature = self.private_key.sign(canonical_json(report))
        return {
            "report": report,
            "signature": {
                "alg": ALG,
                "key_id": key_id(self.public_key),
                "public_key": base64.b64encode(_raw(self.public_key)).decode("ascii"),
                "value": base64.b64encode(signature).decode("ascii"),
            },
        }


def _load_public(text: str) -> Ed25519PublicKey:
    """A public key given as PEM, or as base64 of the 32 raw bytes."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode("ascii"))
        if not isinstance(key, Ed25519PublicKey):
            raise VerifyError("the public key is not an Ed25519 key")
        return key
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        raise VerifyError("the public key is neither PEM nor base64 of 32 raw bytes") from None


def verify_document(document: Any, trusted_public_key: str | None = None) -> str:
    """Check a signed report; return the key id it verified against. Without a trusted key the key
    embedded in the document is used, which proves integrity but not origin: compare the key id
    with the one the node publishes."""
    if not isinstance(document, dict) or not isinstance(document.get("signature"), dict):
        raise VerifyError("not a signed report: no 'signature' object")
    if "report" not in document:
        raise VerifyError("not a signed report: no 'report' object")
    sig = document["signature"]
    if sig.get("alg") != ALG:
        raise VerifyError(f"unsupported signature algorithm {sig.get('alg')!r}")
    key = _load_public(trusted_public_key if trusted_public_key else str(sig.get("public_key", "")))
    try:
        value = base64.b64decode(str(sig.get("value", "")), validate=True)
        key.verify(value, canonical_json(document["report"]))
    except (ValueError, InvalidSignature):
        raise VerifyError("signature does not match the report: it was altered or signed by another key") from None
    return key_id(key)


SIGNING_KEY_META = "report_signing_key"


async def node_signer(store: Any) -> Signer:
    """The node's signing key, created on first use and kept in the store so every worker and
    replica signs with the same key. ``add_meta`` keeps the first key written if two race."""
    pem = await store.get_meta(SIGNING_KEY_META)
    if pem is None:
        pem = await store.add_meta(SIGNING_KEY_META, Signer.generate().to_pem())
    return Signer.from_pem(pem)


__all__ += ["node_signer"]
