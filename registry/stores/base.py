"""The Store protocol: what the registry needs from a database, and the rows it exchanges.

Kept narrow on purpose. Every write goes through :meth:`HandleStore.write`, which applies a list of
:class:`HandleWrite` in one transaction together with the registration counters and the listing
buckets, so counters can never disagree with the identifiers they count.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from registry.errors import StoreTooNew
from registry.model import HandleValue

__all__ = [
    "LIST_BUCKET",
    "Attribution",
    "AuditEntry",
    "AuditRecord",
    "ConsoleSession",
    "CreateStream",
    "Enterprise",
    "Gs1Prefix",
    "HandleStore",
    "HandleWrite",
    "JobRecord",
    "JobReject",
    "ListedHandle",
    "NewHandle",
    "Promoter",
    "ResolutionCount",
    "StoredHandle",
    "ValueCondition",
    "WriteOutcome",
    "WriteResult",
    "audit_where",
    "schema_too_new",
]

# Listing pages are found through per-prefix counts of live handles in buckets of ids.
LIST_BUCKET = 1024
# Expectation markers for HandleWrite.expect.
MUST_NOT_EXIST = -1
ANY_VERSION = -2
# How long a store remembers the id of an applied resolution-count batch (retries come within seconds).
RESOLUTION_BATCH_DAYS = 7


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


class NewHandle(NamedTuple):
    """A handle a :class:`CreateStream` creates (it must not exist yet). ``tail``: its packed record
    after the version (:func:`registry.packing.pack_tail`), packed before the store is involved."""

    key: str
    handle: str
    prefix: str  # normalised
    enterprise_id: int | None
    tail: bytes


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
class ListedHandle:
    """A handle in listing order: ``position`` orders the handles of a prefix (what to continue after)."""

    position: int
    handle: str
    packed: bytes


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


@dataclass(frozen=True, slots=True)
class ResolutionCount:
    """Resolutions of handles under ``prefix`` (normalised, without ``0.NA/``) on ``day`` (YYYYMMDD,
    Asia/Shanghai) through ``interface`` (rest, native, web): ``found`` answered with the record,
    ``not_found`` answered "handle not found". A row of a sum leaves out what it sums over: ``prefix``
    "" (every prefix) or ``day`` 0 (every day of the range)."""

    prefix: str
    day: int
    interface: str
    found: int
    not_found: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log: who did what to what, from where, when (registry.audit)."""

    id: int  # grows with every entry
    at: int
    actor: str  # the identity acting, e.g. 300:0.NA/88.118.8
    action: str  # e.g. admin.reset-secret
    target: str  # what it acted on, e.g. 0.NA/88.118.8
    source: str  # where from: "idnode CLI, user@host", a client address
    detail: str  # a JSON object, never a secret


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An audit entry to store with the change it records, in the change's transaction
    (registry.audit.audit_record builds and checks it)."""

    at: int
    actor: str
    action: str
    target: str
    source: str
    detail: str  # a JSON object


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A background job as the store keeps it (registry.jobs): what it does, how far it got, who runs it.

    ``line`` and ``offset`` are its checkpoint: every row of the file up to ``line`` (ending at byte
    ``offset``) has been written and counted. ``runner`` holds it until ``lease_until``."""

    id: str
    seq: int  # orders the jobs (newest last); set by the store
    kind: str  # import | replace | delete
    prefix: str  # as the caller gave it (an enterprise prefix or the node's)
    owner: str  # the identity that submitted it
    state: str  # queued | running | done | failed
    fmt: str  # csv | ndjson | xlsx | lines
    options: str  # JSON: template, columns
    file_sha256: str
    file_bytes: int
    file_parts: int
    total: int | None = None
    processed: int = 0
    created: int = 0
    replaced: int = 0
    deleted: int = 0
    present: int = 0
    absent: int = 0
    rejected: int = 0
    line: int = 0
    offset: int = 0
    error: str | None = None
    created_at: int = 0
    started_at: int | None = None
    updated_at: int = 0
    finished_at: int | None = None
    runner: str | None = None
    lease_until: int = 0


@dataclass(frozen=True, slots=True)
class JobReject:
    """A row a job rejected: its line in the file, the handle it named (if any) and why."""

    line: int
    handle: str | None
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class ValueCondition:
    """One term of a reverse lookup: values of ``type`` (upper case) whose folded text equals
    ``exact``, or else starts with ``prefix`` and matches ``glob`` / ``like`` (``pattern``, with
    ``*`` for any run of characters, in SQLite's GLOB and SQL's LIKE syntax); ``infix``: the pattern
    starts with a wildcard, so the trigram index is searched (registry.value_index.condition)."""

    type: str
    pattern: str
    exact: str | None
    prefix: str
    glob: str
    like: str
    infix: bool


def audit_where(
    before_id: int | None,
    action: str | None,
    target: str | None,
    since: int | None,
    mark: Callable[[int], str],
    actor: str | None = None,
) -> tuple[str, list[object]]:
    """The WHERE clause of an audit-log query and its arguments; ``mark(n)`` is the n-th placeholder."""
    terms: list[str] = []
    args: list[object] = []
    conditions = (
        ("id", "<", before_id),
        ("action", "=", action),
        ("target", "=", target),
        ("at", ">=", since),
        ("actor", "=", actor),  # index audit_log_actor (actor, id): newest first
    )
    for column, op, value in conditions:
        if value is not None:
            args.append(value)
            terms.append(f"{column} {op} {mark(len(args))}")
    return (" WHERE " + " AND ".join(terms) if terms else ""), args


def schema_too_new(where: str, found: int, known: int) -> StoreTooNew:
    """The refusal of a store whose schema a newer idnode wrote (migrations are forward-only)."""
    return StoreTooNew(
        f"the store at {where} has schema version {found}, newer than this idnode knows (up to {known}): "
        "a newer release upgraded it. Run that release (or a later one); to go back, restore a backup "
        "taken before the upgrade"
    )


@dataclass(frozen=True, slots=True)
class Gs1Prefix:
    """A GS1 company prefix registered by an enterprise (GS1 Digital Link resolution)."""

    company_prefix: str  # 4 to 12 digits
    enterprise_id: int
    enterprise_prefix: str  # the enterprise's handle prefix, e.g. 88.118.8.1001
    created_at: int


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A web console session as stored: the SHA-256 of its id is the row's key, never the id itself."""

    identity: str
    data: str  # JSON of the session's mapping (never a secret key)
    created_at: int
    last_seen: int
    expires_at: int  # absolute expiry


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

    async def write(
        self, writes: Sequence[HandleWrite], *, now: int, atomic: bool = True, audit: AuditRecord | None = None
    ) -> list[WriteResult]:
        """Apply writes in one transaction. atomic: any failed expectation rolls everything back.
        ``audit``: stored in the same transaction when anything was written. Every handle written
        is queued for the value index (registry.value_index) in that transaction too."""

    async def create_stream(self, *, now: int, atomic: bool = True) -> CreateStream:
        """Open one write transaction that creates handles chunk by chunk (a batch written while it
        is still being read); it holds the store's write lock until it is finished or aborted."""

    async def list_handles(self, prefix: str, page: int, page_size: int) -> tuple[int, list[str]]:
        """(total under the normalised prefix, the handles of page ``page``); cost independent of page."""

    async def handles_from(
        self, prefix: str, limit: int, *, start: str | None = None, after: int = -1
    ) -> list[ListedHandle]:
        """Up to ``limit`` handles under the normalised prefix with their records, in listing order:
        those past ``position`` ``after``, from the handle whose key is ``start`` on (none when
        ``start`` is not a handle under the prefix)."""

    async def handles_in_range(
        self,
        prefix: str,
        start: str,
        end: str | None,
        limit: int,
        *,
        after: str | None = None,
        before: str | None = None,
    ) -> list[tuple[str, str]]:
        """(key, handle) of up to ``limit`` handles under the normalised prefix whose keys lie in
        [``start``, ``end``) (``end`` None: no upper bound), in key order: the first ones, those past
        the key ``after``, or the last ones before the key ``before``. Keys compare as code points."""

    async def current_version(self) -> int:
        """The highest version any write has used (monotonic over the store's life)."""

    # -- promoters and enterprises ---------------------------------------------------------------
    async def add_promoter(self, name: str, uscc: str, *, now: int, audit: AuditRecord | None = None) -> Promoter: ...
    async def list_promoters(self) -> list[Promoter]: ...
    async def get_promoter(self, ref: int | str) -> Promoter | None:
        """By id (int) or credit code (str)."""

    async def add_enterprise(
        self,
        name: str,
        uscc: str,
        prefix: str,
        promoter_id: int,
        prefix_write: HandleWrite,
        *,
        now: int,
        audit: AuditRecord | None = None,
    ) -> Enterprise:
        """Create the enterprise, its attribution and its prefix handle (and ``audit``) in one transaction."""

    async def list_enterprises(self) -> list[Enterprise]: ...
    async def get_enterprise(self, ref: int | str) -> Enterprise | None:
        """By id (int), or by prefix or credit code (str)."""

    async def enterprise_prefixes(self) -> list[str]: ...
    async def move_enterprise(
        self, enterprise_id: int, promoter_id: int, *, effective_at: int, audit: AuditRecord | None = None
    ) -> None: ...
    async def set_enterprise_status(
        self, enterprise_id: int, status: str, *, audit: AuditRecord | None = None
    ) -> None: ...
    async def attributions(self) -> list[Attribution]: ...

    # -- GS1 company prefixes (registry.gs1_prefixes) ----------------------------------------------
    async def add_gs1_prefix(
        self, enterprise_id: int, company_prefix: str, *, now: int, limit: int
    ) -> tuple[Gs1Prefix, bool]:
        """Register a company prefix (checked digits) for the enterprise: (the row, True), or (the
        row, False) when the enterprise holds it already. HandleAlreadyExists when it, a shorter
        prefix of it or a longer one starting with it belongs to another enterprise (a GTIN has one
        owner); InvalidRequest when the enterprise holds ``limit`` already. Serialised with other adds."""

    async def list_gs1_prefixes(self, enterprise_id: int | None = None) -> list[Gs1Prefix]:
        """One enterprise's company prefixes (every enterprise's when None), in prefix order."""

    async def remove_gs1_prefix(self, enterprise_id: int, company_prefix: str) -> bool:
        """Remove the enterprise's company prefix; False when it held no such prefix."""

    async def find_gs1_prefix(self, candidates: Sequence[str]) -> Gs1Prefix | None:
        """The longest of ``candidates`` that is registered (one indexed query, for resolution)."""

    # -- clause-8 counters -----------------------------------------------------------------------
    async def registration_counts(self, from_day: int, to_day: int, before_hour: int) -> Mapping[int, int]:
        """Per enterprise: identifiers created on days [from_day, to_day) (YYYYMMDD, Asia/Shanghai)
        counting only changes recorded in hours < before_hour (UNIX hours)."""

    # -- resolution statistics (resolver.ops.resolutions flushes them) --------------------------
    async def add_resolution_counts(self, batch: str, counts: Sequence[ResolutionCount], *, now: int) -> bool:
        """Add ``counts`` to the stored ones (an additive upsert per prefix, day and interface) in one
        transaction, unless ``batch`` (a unique id per flush) was added before: a flush retried after
        an unknown outcome (a connection lost at COMMIT) is then not counted twice. True when added
        now, False when ``batch`` had been. Batch ids are remembered for ``RESOLUTION_BATCH_DAYS``."""

    async def resolution_counts(self, from_day: int, to_day: int, prefix: str | None) -> list[ResolutionCount]:
        """Per day and interface over days [from_day, to_day) (YYYYMMDD): those of ``prefix``, or
        with None the sums over every prefix (rows with prefix ""); ordered by day and interface."""

    async def resolution_prefix_totals(self, from_day: int, to_day: int) -> list[ResolutionCount]:
        """Per prefix and interface, summed over days [from_day, to_day) (rows with day 0); ordered
        by prefix and interface."""

    async def registrations_by_day(self, enterprise_id: int, from_day: int, to_day: int) -> Mapping[int, int]:
        """Identifiers of one enterprise created on each day in [from_day, to_day) (YYYYMMDD,
        Asia/Shanghai) and still present; days without any are left out."""

    # -- web console sessions (resolver.console) -------------------------------------------------
    async def put_console_session(self, id_hash: str, identity: str, data: str, *, now: int, expires_at: int) -> None:
        """Create the session ``id_hash`` (created and last seen ``now``) or replace its data and
        mark it seen ``now`` (its creation and expiry stay)."""

    async def get_console_session(self, id_hash: str) -> ConsoleSession | None: ...
    async def touch_console_session(self, id_hash: str, *, now: int) -> None:
        """Mark the session seen at ``now`` (idle expiry counts from there)."""

    async def delete_console_session(self, id_hash: str) -> None: ...
    async def purge_console_sessions(self, *, now: int, idle_before: int) -> int:
        """Delete sessions past their expiry or last seen before ``idle_before``; how many went."""

    # -- metadata templates and idempotent batch replies ------------------------------------------
    async def add_template(
        self, scope: str, template_id: str, version: int, body: str, *, now: int, audit: AuditRecord | None = None
    ) -> None:
        """Store a template version (and ``audit``); InvalidRequest if (scope, id, version) exists."""

    async def get_template(self, scope: str, template_id: str, version: int | None) -> tuple[int, str] | None:
        """(version, body) of that version, or of the latest when ``version`` is None."""

    async def list_templates(self) -> list[tuple[str, str, int, str]]:
        """Every (scope, id, version, body)."""

    async def get_idempotent(self, key: str) -> tuple[str, bytes] | None:
        """(request hash, stored reply) of an Idempotency-Key, if seen."""

    async def add_idempotent(self, key: str, request_hash: str, response: bytes, *, now: int) -> None:
        """Remember a reply; the first one stored for a key wins."""

    # -- audit log (registry.audit) ---------------------------------------------------------------
    async def add_audit(self, at: int, actor: str, action: str, target: str, source: str, detail: str) -> int:
        """Append one entry; returns its id."""

    async def list_audit(
        self,
        *,
        limit: int,
        before_id: int | None = None,
        action: str | None = None,
        target: str | None = None,
        since: int | None = None,
        actor: str | None = None,
    ) -> list[AuditEntry]:
        """Entries newest first: at most ``limit``, with ids below ``before_id`` (the next page),
        of one ``action``, ``target`` and ``actor`` when given, at or after ``since``."""

    # -- small key/value metadata (node key, schema version) -------------------------------------
    async def get_meta(self, key: str) -> str | None: ...
    async def set_meta(self, key: str, value: str, *, audit: AuditRecord | None = None) -> None: ...
    async def add_meta(self, key: str, value: str) -> str:
        """Store ``value`` unless ``key`` has one already; return the value stored."""

    # -- background jobs (registry.jobs) -----------------------------------------------------------
    async def add_job_part(self, job_id: str, seq: int, data: bytes) -> None:
        """Keep part ``seq`` (from 0) of a job's file, before the job itself is added."""

    async def job_part(self, job_id: str, seq: int) -> bytes | None: ...
    async def add_job(self, job: JobRecord, *, audit: AuditRecord) -> JobRecord:
        """Add a queued job (its parts are stored already) with ``audit``; the job with its ``seq``."""

    async def get_job(self, job_id: str) -> JobRecord | None: ...
    async def list_jobs(
        self, *, prefix: str | None, owner: str | None, limit: int, before_seq: int | None = None
    ) -> list[JobRecord]:
        """Newest first: at most ``limit``, of ``prefix`` and/or ``owner`` when given, older than ``before_seq``."""

    async def find_job(self, kind: str, prefix: str, file_sha256: str, options: str) -> JobRecord | None:
        """The newest job of this kind, prefix, file and options, in any state."""

    async def unfinished_jobs(self, prefix: str) -> int:
        """How many jobs of ``prefix`` are queued or running."""

    async def job_counts(self) -> dict[str, int]:
        """How many jobs there are in each state (states without jobs are left out)."""

    async def job_counts_by_kind(self) -> dict[tuple[str, str], int]:
        """How many jobs there are of each ``(kind, state)`` (pairs without jobs are left out)."""

    async def requeue_job(self, job_id: str, *, parts: int, now: int, audit: AuditRecord) -> bool:
        """A failed job queued again, from its checkpoint, with its file stored again in ``parts`` parts."""

    async def claim_job(self, runner: str, *, now: int, lease_until: int) -> JobRecord | None:
        """Take the oldest job that is queued, or running under a lease that ran out: it is ``runner``'s
        (state running) until ``lease_until``."""

    async def renew_job(self, job_id: str, runner: str, *, lease_until: int) -> bool:
        """Extend ``runner``'s lease; False when the job is no longer its own."""

    async def save_job_progress(self, job: JobRecord, rejects: Sequence[JobReject], *, lease_until: int) -> bool:
        """Store a job's checkpoint and counts (those of ``job``) and the rows it rejected meanwhile (a
        row rejected again replaces its earlier entry), in one transaction, if ``job.runner`` still
        holds it; False otherwise (nothing is stored)."""

    async def finish_job(self, job: JobRecord, *, audit: AuditRecord) -> bool:
        """Record the end of a job (state done or failed, counts, error) with ``audit`` and drop its
        file, if ``job.runner`` still holds it."""

    async def release_job(self, job_id: str, runner: str, *, now: int) -> bool:
        """Give a running job back to the queue (the node is stopping): another runner resumes it."""

    async def job_rejects(self, job_id: str, *, after_line: int, limit: int) -> list[JobReject]:
        """The rows a job rejected, in line order, past ``after_line``."""

    # -- the value index (registry.value_index) ----------------------------------------------------
    async def value_index_backlog(self) -> int:
        """How many written handles wait to be (re)indexed."""

    async def index_values(self, limit: int, entries: Callable[[bytes], list[tuple[int, str, str]]]) -> int:
        """(Re)index up to ``limit`` queued handles as they are now, in one transaction: a handle's
        index rows become ``entries(packed record)`` — (value number, TYPE, folded text) — or none
        when it is gone. Returns how many were taken from the queue (0: none waits, or another
        process is indexing)."""

    async def search_values(
        self, conditions: Sequence[ValueCondition], prefixes: Sequence[str] | None, limit: int, offset: int
    ) -> list[bytes]:
        """Packed records of the handles having, for each condition, an indexed value meeting it, under
        one of ``prefixes`` (normalised; None: any), in listing order: ``limit`` from ``offset``."""


class CreateStream(Protocol):
    """One transaction creating handles in chunks, with the outcomes, counters, listing buckets and
    value-index queue of :meth:`HandleStore.write` for the same :class:`NewHandle` writes (each
    ``expect`` MUST_NOT_EXIST), all at one version. The store works on a chunk while its caller
    prepares the next (the SQLite writer thread, the PostgreSQL server). Keys are distinct across
    the whole stream (the caller checks). ``atomic``: after the first key that exists nothing more
    is written and :meth:`finish` rolls back, but every later key is still checked."""

    def add(self, rows: Sequence[NewHandle]) -> None:
        """Queue a chunk; the store takes it up in order, without the caller waiting."""

    async def drain(self, pending: int) -> None:
        """Wait until at most ``pending`` chunks are queued (keeps a fast producer in step)."""

    async def finish(self, *, commit: bool = True) -> list[WriteResult]:
        """Commit (``commit`` and no atomic failure) or roll back; the outcome of every row added,
        in order: CREATED, EXISTS, or NOT_WRITTEN when nothing was written."""

    async def abort(self) -> None:
        """Roll back and release the store (idempotent; also after :meth:`finish` failed)."""
