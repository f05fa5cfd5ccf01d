"""The Store protocol: what the registry needs from a database, and the rows it exchanges.

Kept narrow on purpose. Every write goes through :meth:`HandleStore.write`, which applies a list of
:class:`HandleWrite` in one transaction together with the registration counters and the listing
buckets, so counters can never disagree with the identifiers they count.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from registry.model import HandleValue

__all__ = [
    "LIST_BUCKET",
    "Attribution",
    "Enterprise",
    "HandleStore",
    "HandleWrite",
    "Promoter",
    "StoredHandle",
    "WriteOutcome",
    "WriteResult",
]

# Listing pages are found through per-prefix counts of live handles in buckets of ids.
LIST_BUCKET = 1024
# Expectation markers for HandleWrite.expect.
MUST_NOT_EXIST = -1
ANY_VERSION = -2


class WriteOutcome(enum.Enum):
    CREATED = "created"
    REPLACED = "replaced"
    DELETED = "deleted"
    EXISTS = "exists"  # expected absent, found present
    MISSING = "missing"  # expected present, found absent
    STALE = "stale"  # expected version differs: a concurrent writer won
    NOT_WRITTEN = "not_written"  # valid, but an atomic write failed elsewhere so nothing was written


class HandleWrite(NamedTuple):
    """Put or delete one handle. ``values`` None deletes. ``expect`` is MUST_NOT_EXIST, ANY_VERSION
    or the version read before (compare-and-set). A named tuple: a batch makes one per item, and a
    frozen dataclass costs several times as much to build."""

    key: str
    handle: str
    prefix: str
    values: tuple[HandleValue, ...] | None
    expect: int = ANY_VERSION
    enterprise_id: int | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    outcome: WriteOutcome
    version: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome in (WriteOutcome.CREATED, WriteOutcome.REPLACED, WriteOutcome.DELETED)


@dataclass(frozen=True, slots=True)
class StoredHandle:
    """A record as read from the store: the packed record plus the columns around it."""

    key: str
    packed: bytes  # registry.packing.pack_record output (carries handle, version, values)
    version: int
    enterprise_id: int | None
    created_at: int


@dataclass(frozen=True, slots=True)
class Promoter:
    id: int
    name: str
    uscc: str
    created_at: int


@dataclass(frozen=True, slots=True)
class Enterprise:
    id: int
    name: str
    uscc: str
    prefix: str  # as allocated, e.g. 88.118.8.1001
    status: str  # "active" | "disabled"
    promoter_id: int | None  # the attribution in force now
    created_at: int


@dataclass(frozen=True, slots=True)
class Attribution:
    enterprise_id: int
    promoter_id: int
    effective_at: int


@runtime_checkable
class HandleStore(Protocol):
    """The storage interface. Times are integer UNIX seconds (UTC)."""

    url: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise StoreUnavailable when the database cannot answer."""

    # -- handles ---------------------------------------------------------------------------------
    async def get(self, key: str) -> StoredHandle | None: ...
    async def get_many(self, keys: Sequence[str]) -> dict[str, StoredHandle]: ...
    async def exists_many(self, keys: Sequence[str]) -> dict[str, int]:
        """Map each existing key to its version."""

    async def write(self, writes: Sequence[HandleWrite], *, now: int, atomic: bool = True) -> list[WriteResult]:
        """Apply writes in one transaction. atomic: any failed expectation rolls everything back."""

    async def list_handles(self, prefix: str, page: int, page_size: int) -> tuple[int, list[str]]:
        """(total under the normalised prefix, the handles of page ``page``); cost independent of page."""

    async def current_version(self) -> int:
        """The highest version any write has used (monotonic over the store's life)."""

    # -- promoters and enterprises ---------------------------------------------------------------
    async def add_promoter(self, name: str, uscc: str, *, now: int) -> Promoter: ...
    async def list_promoters(self) -> list[Promoter]: ...
    async def get_promoter(self, ref: int | str) -> Promoter | None:
        """By id (int) or credit code (str)."""

    async def add_enterprise(
        self, name: str, uscc: str, prefix: str, promoter_id: int, prefix_write: HandleWrite, *, now: int
    ) -> Enterprise:
        """Create the enterprise, its attribution and its prefix handle in one transaction."""

    async def list_enterprises(self) -> list[Enterprise]: ...
    async def get_enterprise(self, ref: int | str) -> Enterprise | None:
        """By id (int), or by prefix or credit code (str)."""

    async def enterprise_prefixes(self) -> list[str]: ...
    async def move_enterprise(self, enterprise_id: int, promoter_id: int, *, effective_at: int) -> None: ...
    async def set_enterprise_status(self, enterprise_id: int, status: str) -> None: ...
    async def attributions(self) -> list[Attribution]: ...

    # -- clause-8 counters -----------------------------------------------------------------------
    async def registration_counts(self, from_day: int, to_day: int, before_hour: int) -> Mapping[int, int]:
        """Per enterprise: identifiers created on days [from_day, to_day) (YYYYMMDD, Asia/Shanghai)
        counting only changes recorded in hours < before_hour (UNIX hours)."""

    # -- metadata templates and idempotent batch replies ------------------------------------------
    async def add_template(self, scope: str, template_id: str, version: int, body: str, *, now: int) -> None:
        """Store a template version; InvalidRequest if (scope, id, version) exists."""

    async def get_template(self, scope: str, template_id: str, version: int | None) -> tuple[int, str] | None:
        """(version, body) of that version, or of the latest when ``version`` is None."""

    async def list_templates(self) -> list[tuple[str, str, int, str]]:
        """Every (scope, id, version, body)."""

    async def get_idempotent(self, key: str) -> tuple[str, bytes] | None:
        """(request hash, stored reply) of an Idempotency-Key, if seen."""

    async def add_idempotent(self, key: str, request_hash: str, response: bytes, *, now: int) -> None:
        """Remember a reply; the first one stored for a key wins."""

    # -- small key/value metadata (node key, schema version) -------------------------------------
    async def get_meta(self, key: str) -> str | None: ...
    async def set_meta(self, key: str, value: str) -> None: ...
    async def add_meta(self, key: str, value: str) -> str:
        """Store ``value`` unless ``key`` has one already; return the value stored."""
