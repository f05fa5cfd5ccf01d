"""Secret keys (HS_SECKEY) are stored only as salted scrypt hashes, made and checked off the event loop.

The stored value data is ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``. The node alone chooses the
scrypt parameters (:data:`SCRYPT_N`, :data:`SCRYPT_R`, :data:`SCRYPT_P`, a 32-byte key): a hash a
client sends with other parameters is refused (responseCode 202), and a stored hash with other
parameters never verifies, so nobody can make a check cost more than the node's own.

scrypt takes ~40 ms of CPU and releases the GIL, so hashing and verifying run in a small thread pool
(:class:`SecretHasher`) with a bounded number of jobs: a flood of guesses gets "busy" answers
instead of queueing unbounded work or stalling the event loop. Callers cache successful checks (see
``registry.auth``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import hashlib
import hmac
import os
import secrets as _secrets
import threading
from collections.abc import Callable
from typing import TypeVar

from registry.errors import InvalidValue, ServerBusy

__all__ = [
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "SecretHasher",
    "check_client_hash",
    "generate_secret",
    "hash_secret",
    "is_hashed",
    "verify_secret",
]

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # 16 MiB and ~40 ms per hash
KEY_BYTES = 32
SALT_BYTES = 16
_MAXMEM = 64 * 1024 * 1024
_PREFIX = "scrypt$"
T = TypeVar("T")


def generate_secret() -> str:
    """A new random secret key, URL-safe, 256 bits."""
    return _secrets.token_urlsafe(32)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _scrypt(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=KEY_BYTES, maxmem=_MAXMEM
    )


def hash_secret(secret: str) -> str:
    """The stored form of ``secret`` (blocking: ~40 ms of CPU; use :class:`SecretHasher` on a loop)."""
    salt = os.urandom(SALT_BYTES)
    return f"{_PREFIX}{SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(_scrypt(secret, salt))}"


def is_hashed(data: str) -> bool:
    """Does ``data`` claim to be a scrypt hash (rather than a plain-text secret)?"""
    return data.startswith(_PREFIX)


def _parse(stored: str) -> tuple[bytes, bytes] | None:
    """(salt, key) of a hash made with the node's parameters; None for anything else."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or parts[1:4] != [str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P)]:
        return None
    try:
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except (binascii.Error, ValueError):
        return None
    if not SALT_BYTES <= len(salt) <= 64 or len(key) != KEY_BYTES:
        return None
    return salt, key


def check_client_hash(text: str, where: str) -> None:
    """Refuse (InvalidValue, responseCode 202) a pre-hashed HS_SECKEY that this node would not make:
    other scrypt parameters, another key length, a salt shorter than 16 bytes, malformed base64."""
    if _parse(text) is None:
        raise InvalidValue(
            f"{where}: a pre-hashed HS_SECKEY must be scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$<salt>$<32-byte key> "
            "(base64, salt of 16-64 bytes); send the secret in plain text and the node hashes it"
        )


def verify_secret(secret: str, stored: str) -> bool:
    """Constant-time check of ``secret`` against a stored hash (blocking, ~40 ms). False for anything
    malformed and for hashes with parameters the node does not use (they are never computed)."""
    parsed = _parse(stored)
    if parsed is None:
        return False
    salt, want = parsed
    return hmac.compare_digest(_scrypt(secret, salt), want)


SCRYPT_NICE = 10


def _lower_priority() -> None:
    """Run this pool thread at nice +10: when CPUs are short, serving requests (the event loop
    thread, nice 0) goes first and credential checks wait. Linux applies a nice value to one thread;
    elsewhere (or without permission) the thread keeps the process's priority."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + SCRYPT_NICE)


class SecretHasher:
    """scrypt in a small thread pool with at most ``max_jobs`` jobs queued or running.

    :meth:`verify` (a credential check, anyone may ask) is refused with :class:`ServerBusy` when the
    pool is full, or when ``source`` (the client address) already has ``max_jobs_per_source`` checks
    in flight: guesses never queue unbounded work, and one address cannot take every slot. The
    threads run at a lower CPU priority than the event loop (see :func:`_lower_priority`).
    :meth:`hash` (a write by an authenticated caller) waits for a slot instead. A slot is freed when
    the thread finishes the job, not when the waiting request goes away.
    """

    def __init__(self, threads: int = 1, max_jobs: int = 16, max_jobs_per_source: int = 4) -> None:
        if threads < 1 or max_jobs < 1 or max_jobs_per_source < 1:
            raise ValueError("threads and job limits must be at least 1")
        self.threads = threads
        self.max_jobs = max_jobs
        self.max_jobs_per_source = max_jobs_per_source
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._per_source: dict[str, int] = {}
        self.refused = 0  # verifications refused as busy (for tests and status)
        self.jobs = 0  # scrypt computations started (for tests and status)

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.threads, thread_name_prefix="scrypt", initializer=_lower_priority
            )
        return self._pool

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_jobs)
        return self._slots

    async def _run(self, slots: asyncio.Semaphore, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` in the pool holding one slot (already acquired) until the thread is done."""
        loop = asyncio.get_running_loop()

        def release(_: object) -> None:
            # RuntimeError: the loop is gone (shutdown), nobody waits for the slot any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(slots.release)

        try:
            job = self._executor().submit(fn, *args)
        except BaseException:
            slots.release()
            raise
        self.jobs += 1
        job.add_done_callback(release)
        return await asyncio.wrap_future(job)

    async def hash(self, secret: str) -> str:
        slots = self._semaphore()
        await slots.acquire()
        return await self._run(slots, hash_secret, secret)

    async def verify(self, secret: str, stored: str, source: str | None = None) -> bool:
        if _parse(stored) is None:
            return False  # nothing to compute: malformed, or parameters the node does not use
        slots = self._semaphore()
        busy = slots.locked() or (source is not None and self._per_source.get(source, 0) >= self.max_jobs_per_source)
        if busy:
            self.refused += 1
            raise ServerBusy("too many secret-key checks in progress; retry shortly", retry_after=1)
        await slots.acquire()  # free: returns at once
        if source is not None:
            self._per_source[source] = self._per_source.get(source, 0) + 1
        try:
            return await self._run(slots, verify_secret, secret, stored)
        finally:
            if source is not None:
                left = self._per_source.pop(source, 1) - 1
                if left > 0:
                    self._per_source[source] = left

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
