"""Ed25519 signatures over canonical JSON: how reports prove they came from this node.

Canonical form: UTF-8 JSON with sorted keys, no insignificant white space, non-ASCII kept as is.
A signed document is ``{"report": …, "signature": {"alg", "key_id", "public_key", "value"}}``;
``value`` signs the canonical form of ``report`` alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from registry.private_files import create_private_file, make_private

__all__ = [
    "EXTERNAL_KEY",
    "REPORT_KEY_INDEX",
    "REPORT_KEY_TYPE",
    "Signer",
    "SigningKeyError",
    "VerifyError",
    "canonical_json",
    "key_id",
    "node_signer",
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
# What the store holds instead of the PEM once the key is kept in a file: the key's id, so that a
# node of the same store started without the file refuses to sign with a key of its own.
EXTERNAL_KEY = "external:"

log = logging.getLogger("idnode")


class SigningKeyError(ValueError):
    """The node's report key cannot be loaded as configured."""


async def node_signer(store: Any, key_file: str | None = None) -> Signer:
    """The node's signing key, the same for every worker and replica.

    Without ``key_file`` it is kept in the store, created on first use (``add_meta`` keeps the
    first key written if two race). With ``key_file`` it is kept in that PEM file (mode 0600),
    created if absent: from the store's key when there is one (the published key stays the same),
    else a new one; the store then holds only the key's id."""
    stored = await store.get_meta(SIGNING_KEY_META)
    if not key_file:
        if stored is not None and stored.startswith(EXTERNAL_KEY):
            raise SigningKeyError(
                f"the report-signing key of this store is kept in a file (key id {stored[len(EXTERNAL_KEY) :]}), "
                "not in the store: set report_key_file to that file, as on the other nodes"
            )
        if stored is None:
            stored = await store.add_meta(SIGNING_KEY_META, Signer.generate().to_pem())
        return Signer.from_pem(stored)
    in_store = Signer.from_pem(stored) if stored is not None and not stored.startswith(EXTERNAL_KEY) else None
    signer = _file_signer(key_file, in_store)
    kid = key_id(signer.public_key)
    if in_store is not None and key_id(in_store.public_key) != kid:
        log.warning(
            "report_key_file %s holds key id %s, the store held key id %s: signing with %s; the store's key is "
            "removed (reports signed with it still verify against the key embedded in them)",
            key_file,
            kid,
            key_id(in_store.public_key),
            kid,
        )
    if stored != EXTERNAL_KEY + kid:
        await store.set_meta(SIGNING_KEY_META, EXTERNAL_KEY + kid)
    return signer


def _file_signer(path: str, in_store: Signer | None) -> Signer:
    try:
        pem = _read_key(path)
    except FileNotFoundError:
        fresh = in_store or Signer.generate()
        if create_private_file(path, fresh.to_pem().encode("ascii")):
            log.info("report-signing key %s written to %s", key_id(fresh.public_key), path)
            return fresh
        pem = _read_key(path)  # another process created it first
    make_private(path)
    try:
        return Signer.from_pem(pem)
    except ValueError as exc:
        raise SigningKeyError(f"{path}: not an unencrypted Ed25519 private key in PEM ({exc})") from None


def _read_key(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"cannot read report_key_file {path}: {exc}") from None
