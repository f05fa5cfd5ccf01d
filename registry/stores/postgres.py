"""PostgreSQL backend: the production store, on an asyncpg connection pool.

Same semantics as :mod:`registry.stores.sqlite`: the same outcomes, versions, counters, listing
order and refusals. How it gets there:

Versions and ``current_version()``
    One row, ``idnode_state``, holds the global write version and the next handle id. Every handle
    write begins by incrementing that row (``UPDATE … RETURNING``), which locks it until the
    transaction ends. So handle writes are serialised, versions are handed out in commit order and a
    rolled-back write leaves no trace (no gap, unlike a sequence). ``current_version()`` reads the
    committed value, which makes it a *watermark*: every write with a version <= V is committed and
    visible to any read that starts after ``current_version()`` returned V, and every write not yet
    visible will commit with a version > V. A cache may therefore tag a fill (a record, or "not
    found") with a V read *before* it read the store, and let any invalidation carrying a larger
    version win. A sequence would not give this: its numbers are taken at transaction start, commit
    out of order, and rolled-back ones are burnt.

    The same lock makes the existence and compare-and-set checks race-free across processes, as
    SQLite's single writer does: once the lock is granted, each READ COMMITTED statement sees every
    write committed before. Per-key row locks would not buy parallelism, since every write must
    hold the version row until it commits anyway; what can run outside the lock does (packing).

Writes
    Outcomes are decided in Python by :func:`_classify`, the rule of the SQLite store, from one
    query that reads the call's existing keys (``unnest`` of the keys joined to ``handles``). Then
    one statement of data-modifying CTEs deletes, replaces and inserts by key arrays and upserts
    the listing-bucket and counter deltas, which are aggregated in Python (one row per bucket and
    per enterprise-day however large the call). Large calls create their rows with a binary
    ``COPY`` straight into ``handles`` instead. A packed record is ``[FORMAT, version, handle,
    values]`` in msgpack: everything after the version is packed before the lock (on a worker
    thread for large calls), the version head is prefixed once the version is known.

    Handle ids come from ``idnode_state.next_id``: a row created at position ``i`` of a call gets
    ``next_id + i``, so ids follow write order (the listing order) and need no per-row sequence
    call; positions that create nothing leave unused ids, which listing does not mind.

Planner settings
    Every query here is a key lookup. Lookups of a call's keys are written so that they stay one
    index probe per key (``LATERAL … LIMIT 1``, ``= ANY``), and the pool's sessions also run with
    hash and merge joins disabled: a hash join would scan the whole of ``handles``, and a cached
    generic plan could repeat that scan for every single write. JIT is off: compiling costs tens of
    milliseconds and never pays off here.

Failures
    Connection failures (refused, reset, shutdown, timeouts, pool closed) raise
    :class:`StoreUnavailable`; a call that met a connection the server had dropped (a restart) is
    retried once on a fresh one, unless it may have committed. The pool connects lazily, so it
    recovers by itself once the database is back. Constraint violations raise
    :class:`InvalidRequest`, with the SQLite store's messages for promoters and enterprises.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import asyncpg.exceptions as pgerr
import msgpack

from registry.days import day_number, hour_of
from registry.errors import InvalidRequest, ServerError, StoreUnavailable
from registry.model import HandleValue, Record
from registry.packing import FORMAT, pack_record, pack_values
from registry.stores import rollup
from registry.stores.base import (
    LIST_BUCKET,
    MUST_NOT_EXIST,
    RESOLUTION_BATCH_DAYS,
    Attribution,
    AuditEntry,
    AuditRecord,
    ConsoleSession,
    Enterprise,
    Gs1Prefix,
    HandleWrite,
    ListedHandle,
    Promoter,
    ResolutionCount,
    StoredHandle,
    WriteOutcome,
    WriteResult,
    audit_where,
    schema_too_new,
)
from registry.stores.gs1_rules import gs1_check_conflicts, gs1_check_limit, gs1_shorter
from registry.stores.postgres_jobs import JOBS_DDL, PostgresJobs, insert_audit
from registry.stores.postgres_values import QUEUE_ROW, VALUES_DDL, PostgresValues

__all__ = ["HANDLES_COPY_COLUMNS", "HANDLES_DDL", "MIGRATIONS", "SCHEMA_VERSION", "PostgresStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Held (transaction-scoped) while migrations run, so two processes starting together do not race.
MIGRATION_LOCK = 0x69646E6F6465  # "idnode"
# Held while a GS1 company prefix is added, so two overlapping ones cannot both pass the check.
GS1_LOCK = 0x69646E6F6731  # "idnog1"

# The identifiers' table, part of migration 1 (a later change to it is a new migration, not an edit here).
# ``{table}`` is ``handles``; the benchmarks create their baseline table from the same text.
HANDLES_DDL = """
        CREATE TABLE {table} (
            prefix TEXT COLLATE "C" NOT NULL,
            id BIGINT NOT NULL,
            hkey TEXT COLLATE "C" NOT NULL,
            handle TEXT NOT NULL,
            enterprise_id BIGINT,
            created_at BIGINT NOT NULL,
            created_day INTEGER NOT NULL,
            updated_at BIGINT NOT NULL,
            version BIGINT NOT NULL,
            record BYTEA NOT NULL,
            PRIMARY KEY (prefix, id)
        );
        CREATE UNIQUE INDEX {table}_hkey ON {table} (hkey);
"""

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE idnode_state (
            singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
            version BIGINT NOT NULL,
            next_id BIGINT NOT NULL
        );
        INSERT INTO idnode_state (version, next_id) VALUES (0, 1);
        """
        + HANDLES_DDL.format(table="handles")
        + """
        CREATE TABLE list_buckets (
            prefix TEXT COLLATE "C" NOT NULL,
            bucket BIGINT NOT NULL,
            n BIGINT NOT NULL,
            PRIMARY KEY (prefix, bucket)
        );
        CREATE TABLE registration_counts (
            enterprise_id BIGINT NOT NULL,
            day INTEGER NOT NULL,
            hour BIGINT NOT NULL,
            delta BIGINT NOT NULL,
            PRIMARY KEY (enterprise_id, day, hour)
        );
        CREATE TABLE promoters (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            name TEXT NOT NULL,
            uscc TEXT NOT NULL CONSTRAINT promoters_uscc_key UNIQUE,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE enterprises (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            name TEXT NOT NULL,
            uscc TEXT NOT NULL CONSTRAINT enterprises_uscc_key UNIQUE,
            prefix TEXT NOT NULL,
            prefix_key TEXT NOT NULL CONSTRAINT enterprises_prefix_key_key UNIQUE,
            status TEXT NOT NULL DEFAULT 'active',
            created_at BIGINT NOT NULL
        );
        CREATE TABLE attributions (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
            promoter_id BIGINT NOT NULL REFERENCES promoters (id),
            effective_at BIGINT NOT NULL
        );
        CREATE INDEX attributions_enterprise ON attributions (enterprise_id, effective_at);
        """,
    ),
    (
        2,
        """
        CREATE TABLE templates (
            scope TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL, version INTEGER NOT NULL,
            body TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (scope, id, version)
        );
        CREATE TABLE idempotency (
            key TEXT PRIMARY KEY, request_hash TEXT NOT NULL, response BYTEA NOT NULL, created_at BIGINT NOT NULL
        );
        """,
    ),
    (
        3,
        # The monthly roll-up of the counters (registry.stores.rollup) and the indexes its queries use.
        """
        CREATE TABLE registration_months (
            month INTEGER NOT NULL,
            change_month INTEGER NOT NULL,
            enterprise_id BIGINT NOT NULL,
            delta BIGINT NOT NULL,
            PRIMARY KEY (enterprise_id, month, change_month)
        );
        INSERT INTO registration_months (month, change_month, enterprise_id, delta)
            SELECT day / 100, to_char(to_timestamp(hour * 3600) AT TIME ZONE 'Asia/Shanghai', 'YYYYMM')::integer,
                   enterprise_id, SUM(delta)
            FROM registration_counts GROUP BY 1, 2, 3;
        CREATE INDEX registration_counts_hour ON registration_counts (hour) INCLUDE (day, enterprise_id, delta);
        CREATE INDEX registration_counts_day ON registration_counts (day, hour) INCLUDE (enterprise_id, delta);
        """,
    ),
    (
        4,
        # Resolution statistics (resolver.ops.resolutions) and the ids of the flushes already added.
        """
        CREATE TABLE resolution_counts (
            prefix TEXT COLLATE "C" NOT NULL,
            day INTEGER NOT NULL,
            interface TEXT COLLATE "C" NOT NULL,
            found BIGINT NOT NULL,
            not_found BIGINT NOT NULL,
            PRIMARY KEY (prefix, day, interface)
        );
        CREATE INDEX resolution_counts_day ON resolution_counts (day) INCLUDE (prefix, interface, found, not_found);
        CREATE TABLE resolution_batches (batch TEXT PRIMARY KEY, added_at BIGINT NOT NULL);
        CREATE INDEX resolution_batches_added ON resolution_batches (added_at);
        """,
    ),
    (
        5,
        # GS1 company prefixes of enterprises (GS1 Digital Link resolution).
        """
        CREATE TABLE gs1_prefixes (
            company_prefix TEXT COLLATE "C" PRIMARY KEY,
            enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
            created_at BIGINT NOT NULL
        );
        CREATE INDEX gs1_prefixes_enterprise ON gs1_prefixes (enterprise_id, company_prefix);
        """,
    ),
    (
        6,
        # The audit log (registry.audit).
        """
        CREATE TABLE audit_log (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at BIGINT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT COLLATE "C" NOT NULL,
            target TEXT COLLATE "C" NOT NULL,
            source TEXT NOT NULL,
            detail TEXT NOT NULL
        );
        CREATE INDEX audit_log_action ON audit_log (action, id);
        CREATE INDEX audit_log_target ON audit_log (target, id);
        """,
    ),
    (
        7,
        # Console sessions (resolver.console.sessions): only a SHA-256 of each random session id is kept.
        """
        CREATE TABLE console_sessions (
            id_hash TEXT PRIMARY KEY,
            identity TEXT NOT NULL,
            data TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            expires_at BIGINT NOT NULL
        );
        CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
        CREATE INDEX console_sessions_seen ON console_sessions (last_seen);
        """,
    ),
    # Background jobs (registry.jobs): jobs, their files and rejected rows.
    (8, JOBS_DDL),
    # The reverse-lookup value index (registry.value_index): the queue of written handles (every
    # existing handle queued, so the node indexes them), value rows, pg_trgm GIN.
    (9, VALUES_DDL),
]
# The schema version a store is at once every migration above has run (its highest number).
SCHEMA_VERSION = max(number for number, _ in MIGRATIONS)

_ADD_RESOLUTIONS = (
    "INSERT INTO resolution_counts (prefix, day, interface, found, not_found) "
    "SELECT * FROM unnest($1::text[], $2::integer[], $3::text[], $4::bigint[], $5::bigint[]) "
    "ORDER BY 1, 2, 3 "
    "ON CONFLICT (prefix, day, interface) DO UPDATE SET found = resolution_counts.found + excluded.found, "
    "not_found = resolution_counts.not_found + excluded.not_found"
)

COPY_THRESHOLD = 1000  # created rows; from here on they go in with COPY rather than INSERT … unnest
PACK_IN_THREAD = 2000  # writes; from here on records are packed on a worker thread

# -- SQL ----------------------------------------------------------------------------------------
_LOCK = "UPDATE idnode_state SET version = version + 1 RETURNING version, next_id"
# Key lookups are written as LATERAL … LIMIT 1 so that they stay one index probe per key whatever
# the planner estimates (a join it could flatten might become a hash join over the whole table).
_CHECK = (
    "SELECT k.ord - 1, h.version, h.prefix, h.id, h.enterprise_id, h.created_day "
    "FROM unnest($1::text[]) WITH ORDINALITY k(key, ord) CROSS JOIN LATERAL ("
    ' SELECT version, prefix, id, enterprise_id, created_day FROM handles WHERE hkey = (k.key COLLATE "C") LIMIT 1'
    ") h"
)
# The columns a new row fills, in COPY order (the benchmarks' baseline COPYs the same).
HANDLES_COPY_COLUMNS = [
    "prefix",
    "id",
    "hkey",
    "handle",
    "enterprise_id",
    "created_at",
    "created_day",
    "updated_at",
    "version",
    "record",
]


@functools.cache
def _apply_sql(deletes: bool, replaces: bool, inserts: bool, ids: bool, buckets: bool, counters: bool) -> str:
    """The one statement that applies a checked call, with only the parts it needs. Placeholders are
    ``@name``; :func:`_numbered` turns them into ``$n``."""
    # Every handle written waits for the value index (registry.value_index), queued in this transaction:
    # a queue row holds the ids of up to QUEUE_ROW handles (a row per handle cost a batch a fifth more).
    ctes: list[str] = [
        "q AS (INSERT INTO value_index_queue (hids, prefixes)"
        " SELECT array_agg(u.h ORDER BY u.o), array_agg(u.p ORDER BY u.o)"
        " FROM unnest(@q_hids::bigint[], @q_prefixes::text[]) WITH ORDINALITY u(h, p, o)"
        f" GROUP BY (u.o - 1) / {QUEUE_ROW} RETURNING 1)"
    ]
    counts: list[str] = ["(SELECT count(*) FROM q) AS queued"]
    if deletes:
        ctes.append("d AS (DELETE FROM handles WHERE hkey = ANY(@del_keys::text[]) RETURNING 1)")
        counts.append("(SELECT count(*) FROM d) AS deleted")
    if replaces:
        ctes.append(
            "u AS (UPDATE handles h SET record = v.record, handle = v.handle, version = @version::bigint,"
            " updated_at = @now::bigint"
            " FROM unnest(@upd_keys::text[], @upd_handles::text[], @upd_records::bytea[]) v(key, handle, record)"
            ' WHERE h.hkey = (v.key COLLATE "C") RETURNING 1)'
        )
        counts.append("(SELECT count(*) FROM u) AS replaced")
    if inserts:
        ctes.append(
            "i AS (INSERT INTO handles (prefix, id, hkey, handle, enterprise_id, created_at, created_day,"
            " updated_at, version, record)"
            " SELECT v.prefix, v.id, v.key, v.handle, v.eid, @now::bigint, @day::integer, @now::bigint,"
            " @version::bigint, v.record"
            " FROM unnest(@ins_prefixes::text[], @ins_ids::bigint[], @ins_keys::text[], @ins_handles::text[],"
            " @ins_eids::bigint[], @ins_records::bytea[]) v(prefix, id, key, handle, eid, record) RETURNING 1)"
        )
        counts.append("(SELECT count(*) FROM i) AS created")
    if ids:
        ctes.append("s AS (UPDATE idnode_state SET next_id = next_id + @id_span::bigint RETURNING 1)")
        counts.append("(SELECT count(*) FROM s) AS state")
    if buckets:
        ctes.append(
            "b AS (INSERT INTO list_buckets (prefix, bucket, n)"
            " SELECT * FROM unnest(@b_prefixes::text[], @b_buckets::bigint[], @b_deltas::bigint[])"
            " ON CONFLICT (prefix, bucket) DO UPDATE SET n = list_buckets.n + excluded.n RETURNING 1)"
        )
        counts.append("(SELECT count(*) FROM b) AS buckets")
    if counters:
        ctes.append(
            "c AS (INSERT INTO registration_counts (enterprise_id, day, hour, delta)"
            " SELECT v.eid, v.day, @hour::bigint, v.delta"
            " FROM unnest(@c_eids::bigint[], @c_days::integer[], @c_deltas::bigint[]) v(eid, day, delta)"
            " ON CONFLICT (enterprise_id, day, hour)"
            " DO UPDATE SET delta = registration_counts.delta + excluded.delta RETURNING 1)"
        )
        counts.append("(SELECT count(*) FROM c) AS counters")
        ctes.append(
            "m AS (INSERT INTO registration_months (month, change_month, enterprise_id, delta)"
            " SELECT v.day / 100, @change_month::integer, v.eid, SUM(v.delta)"
            " FROM unnest(@c_eids::bigint[], @c_days::integer[], @c_deltas::bigint[]) v(eid, day, delta)"
            " GROUP BY 1, 3"
            " ON CONFLICT (enterprise_id, month, change_month)"
            " DO UPDATE SET delta = registration_months.delta + excluded.delta RETURNING 1)"
        )
        counts.append("(SELECT count(*) FROM m) AS months")
    return "WITH " + ",\n".join(ctes) + "\nSELECT " + ", ".join(counts)


@functools.cache
def _numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """``@name`` placeholders → ``$n``: (sql, the argument names in order)."""
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return re.sub(r"@([a-z_]+)", number, sql), tuple(names)


_LIST = f"""
WITH b AS (
    SELECT bucket, n, SUM(n) OVER (ORDER BY bucket) AS upto FROM list_buckets WHERE prefix = $1 AND n > 0
),
t AS (SELECT COALESCE(SUM(n), 0)::bigint AS total FROM b),
s AS (SELECT bucket, $2::bigint - (upto - n) AS skip FROM b WHERE upto > $2::bigint ORDER BY bucket LIMIT 1)
SELECT t.total, p.handle
FROM t LEFT JOIN (
    SELECT h.id, h.handle FROM s CROSS JOIN LATERAL (
        SELECT id, handle FROM handles
        WHERE prefix = $1 AND id >= s.bucket * {LIST_BUCKET}
        ORDER BY id LIMIT $3 OFFSET s.skip
    ) h
) p ON true
ORDER BY p.id
"""
_COUNT = "SELECT COALESCE(SUM(n), 0)::bigint FROM list_buckets WHERE prefix = $1 AND n > 0"
_FROM = (
    "SELECT id, handle, record FROM handles WHERE prefix = $1 AND id > $2 AND ($3::text IS NULL OR id >= "
    "(SELECT id FROM handles WHERE hkey = $3 AND prefix = $1)) ORDER BY id LIMIT $4"
)

_HANDLE_COLUMNS = "hkey, record, version, enterprise_id, created_at"
_GET = f"SELECT {_HANDLE_COLUMNS} FROM handles WHERE hkey = $1"
_GET_MANY = (
    f"SELECT h.* FROM unnest($1::text[]) k(key) CROSS JOIN LATERAL ("
    f' SELECT {_HANDLE_COLUMNS} FROM handles WHERE hkey = (k.key COLLATE "C") LIMIT 1) h'
)
_EXISTS_MANY = (
    "SELECT h.* FROM unnest($1::text[]) k(key) CROSS JOIN LATERAL ("
    ' SELECT hkey, version FROM handles WHERE hkey = (k.key COLLATE "C") LIMIT 1) h'
)

_GS1_SQL = (
    "SELECT g.company_prefix, g.enterprise_id, e.prefix, g.created_at "
    "FROM gs1_prefixes g JOIN enterprises e ON e.id = g.enterprise_id"
)
_ENTERPRISE_SQL = (
    "SELECT e.id, e.name, e.uscc, e.prefix, e.status, "
    "(SELECT a.promoter_id FROM attributions a WHERE a.enterprise_id = e.id "
    " ORDER BY a.effective_at DESC, a.seq DESC LIMIT 1), e.created_at FROM enterprises e"
)


# -- packing: everything but the version is packed before the write lock -------------------------
def _head(version: int) -> bytes:
    """The bytes a packed record starts with, up to and including its version."""
    return b"\x94" + msgpack.packb(FORMAT) + msgpack.packb(version)


def _tail(handle: str, values: tuple[HandleValue, ...]) -> bytes:
    """The bytes of a packed record after its version: ``_head(v) + _tail(h, vs)`` is
    ``pack_record(Record(h, vs, v))`` (checked at import, see _SPLICE_OK)."""
    return msgpack.packb(handle, use_bin_type=True) + pack_values(values)


def _splice_ok() -> bool:
    """True when ``_head(v) + _tail(...)`` is byte-for-byte ``pack_record`` (the layout is as assumed)."""
    try:
        values = (HandleValue(index=1, type="URL", data=b"x"), HandleValue(index=2, type="EMAIL", data=b"\xff"))
        return all(
            _head(v) + _tail(h, values) == pack_record(Record(handle=h, values=values, version=v))
            for v in (0, 1, 127, 128, 65536, 2**40)
            for h in ("0.NA/x", "88.118.8/é" * 10, "88.118.8/" + "x" * 300)
        )
    except Exception:  # pragma: no cover
        return False


# False only if packing.py changed its layout: then whole records are packed under the lock.
_SPLICE_OK = _splice_ok()


def _tails(writes: Sequence[HandleWrite]) -> list[bytes | None]:
    return [None if w.values is None else _tail(w.handle, w.values) for w in writes]


class _Records:
    """The packed records of one write() call: tails packed once (on a worker thread for large calls,
    started before the transaction so it overlaps the lock and the existence check, and kept for a
    retry), the version head added under the lock."""

    def __init__(self, writes: Sequence[HandleWrite]) -> None:
        self.writes = writes
        self._tails: list[bytes | None] | None = None
        self._pending: asyncio.Future[list[bytes | None]] | None = None
        if not _SPLICE_OK:
            return
        if len(writes) >= PACK_IN_THREAD:
            self._pending = asyncio.get_running_loop().run_in_executor(None, _tails, writes)
        else:
            self._tails = _tails(writes)

    async def ready(self) -> None:
        if self._pending is not None:
            self._tails = await self._pending
            self._pending = None

    def record(self, i: int, version: int, head: bytes) -> bytes:
        if self._tails is None:  # pragma: no cover - only when packing.py changed its layout
            w = self.writes[i]
            assert w.values is not None
            return pack_record(Record(handle=w.handle, values=w.values, version=version))
        tail = self._tails[i]
        assert tail is not None
        return head + tail

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


# -- failures -----------------------------------------------------------------------------------
# Errors meaning "the database cannot answer now" rather than "this request is wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; also TimeoutError (= asyncio.TimeoutError) and ConnectionError
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # pool closed, connection closed
    pgerr.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now, query canceled
    pgerr.InsufficientResourcesError,  # too many connections, disk full, out of memory
    pgerr.TransactionRollbackError,  # deadlock, serialization failure
    pgerr.ReadOnlySQLTransactionError,  # connected to a standby after a failover
    pgerr.PostgresSystemError,  # I/O error on the server
)
# Errors meaning the connection we were handed was already dead (the server restarted, or ended the
# backend): worth one retry on a fresh connection.
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    pgerr.AdminShutdownError,
    pgerr.CrashShutdownError,
)
_UNIQUE_MESSAGES = {
    "promoters_uscc_key": "a promoter with credit code {uscc} already exists",
    "enterprises_uscc_key": "an enterprise with credit code {uscc} already exists",
    "enterprises_prefix_key_key": "prefix {prefix} is already allocated",
}


class _NotWritten(Exception):
    """Raised inside a write transaction to roll it back and hand back the outcomes."""

    def __init__(self, results: list[WriteResult]) -> None:
        super().__init__("not written")
        self.results = results


@dataclass(slots=True)
class _Attempt:
    acquired: bool = False  # a connection was handed to us
    commit_sent: bool = False  # from here on a failure leaves the outcome unknown: never retry


@dataclass(slots=True)
class _Existing:
    version: int
    prefix: str
    id: int
    enterprise_id: int | None
    created_day: int


@dataclass(slots=True)
class _Plan:
    """A checked call: the failed outcomes (None where the write goes ahead) and what to apply."""

    results: list[WriteResult | None]
    deletes: list[int] = field(default_factory=list)
    replaces: list[int] = field(default_factory=list)
    creates: list[int] = field(default_factory=list)


def _classify(writes: Sequence[HandleWrite], have: Mapping[int, _Existing], atomic: bool) -> _Plan | list[WriteResult]:
    """The outcome rule of the SQLite store's ``_apply``. Returns the final results when nothing is
    to be written (nothing passed, or an atomic call with a failure), else the plan."""
    plan = _Plan(results=[])
    for i, w in enumerate(writes):
        found = have.get(i)
        current = found.version if found is not None else None
        if w.expect == MUST_NOT_EXIST and current is not None:
            plan.results.append(WriteResult(WriteOutcome.EXISTS, current))
        elif current is None and (w.values is None or w.expect >= 0):
            plan.results.append(WriteResult(WriteOutcome.MISSING))
        elif w.expect >= 0 and current != w.expect:
            plan.results.append(WriteResult(WriteOutcome.STALE, current))
        else:
            plan.results.append(None)
            if w.values is None:
                plan.deletes.append(i)
            elif current is None:
                plan.creates.append(i)
            else:
                plan.replaces.append(i)
    todo = len(plan.deletes) + len(plan.replaces) + len(plan.creates)
    if not todo or (atomic and todo != len(writes)):
        return [r or WriteResult(WriteOutcome.NOT_WRITTEN) for r in plan.results]
    return plan


def _describe(url: str) -> str:
    """host:port/database of a URL, without credentials, for messages."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"
    except ValueError:
        return "PostgreSQL"


# Session settings of every pooled connection (see "Planner settings" above). Set by the pool's
# init hook rather than as startup parameters, which connection poolers such as PgBouncer refuse.
_SESSION_SETTINGS = "SET enable_hashjoin = off; SET enable_mergejoin = off; SET jit = off"


async def _init_session(conn: asyncpg.Connection) -> None:
    await conn.execute(_SESSION_SETTINGS)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook, replacing asyncpg's default ``RESET ALL`` (which would undo
    _SESSION_SETTINGS, and costs a round trip on every release). asyncpg itself still rolls back a
    transaction left open; this store takes no session advisory locks, LISTENs or cursors."""


class PostgresStore(PostgresJobs, PostgresValues):
    """The production store. ``url`` is ``postgresql://user[:password]@host[:port]/database``."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        acquire_timeout: float | None = None,
        application_name: str = "idnode",
    ) -> None:
        self.url = url
        self._dsn = "postgresql://" + url.split("://", 1)[1] if url.startswith("postgres://") else url
        self._where = _describe(url)
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._acquire_timeout = acquire_timeout if acquire_timeout is not None else command_timeout
        self._application_name = application_name
        self._pool: asyncpg.Pool | None = None

    # -- connections ---------------------------------------------------------------------------
    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        detail = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}".rstrip(": ")
        return StoreUnavailable(f"PostgreSQL store at {self._where} is unavailable ({detail})")

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                command_timeout=self._command_timeout,
                timeout=self._connect_timeout,
                init=_init_session,
                reset=_keep_session,
                server_settings={"application_name": self._application_name},
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._unavailable(exc) from None
        try:
            await self._run(self._migrate)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except Exception:
            pool.terminate()

    async def _run(self, fn: Callable[[asyncpg.Connection, _Attempt], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection, mapping failures to the registry's errors. A call that
        met a dead pooled connection is retried once on a fresh one, unless it may have committed."""
        for attempt_no in (1, 2):
            pool = self._pool
            if pool is None:
                raise StoreUnavailable(f"PostgreSQL store at {self._where} is closed")
            attempt = _Attempt()
            try:
                async with pool.acquire(timeout=self._acquire_timeout) as conn:
                    attempt.acquired = True
                    return await fn(conn, attempt)
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise InvalidRequest(f"conflicting data: {exc}") from None
            except asyncpg.DataError as exc:  # a value of the wrong type: the caller's mistake
                raise InvalidRequest(f"invalid data for the store: {exc}") from None
            except _UNAVAILABLE as exc:
                retry = (
                    attempt_no == 1
                    and attempt.acquired
                    and not attempt.commit_sent
                    and isinstance(exc, _CONNECTION_LOST)
                    and self._pool is not None
                )
                if not retry:
                    raise self._unavailable(exc) from None
                log.info("PostgreSQL connection lost (%s); retrying on a fresh connection", type(exc).__name__)
                with contextlib.suppress(Exception):
                    await pool.expire_connections()
            except asyncpg.PostgresError as exc:
                if not attempt.acquired:  # connecting failed: no such database, authentication, …
                    raise self._unavailable(exc) from None
                log.exception("PostgreSQL store error")
                raise ServerError(f"store error: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run(conn: asyncpg.Connection, _: _Attempt) -> list[asyncpg.Record]:
            return await conn.fetch(sql, *args)

        return await self._run(run)

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async def run(conn: asyncpg.Connection, _: _Attempt) -> asyncpg.Record | None:
            return await conn.fetchrow(sql, *args)

        return await self._run(run)

    async def _execute(self, sql: str, *args: Any, audit: AuditRecord | None = None) -> None:
        """One write statement (and ``audit``) in its own transaction (so a connection lost before
        COMMIT is retried)."""

        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> None:
            async with conn.transaction():
                await conn.execute(sql, *args)
                await insert_audit(conn, audit)
                attempt.commit_sent = True

        await self._run(run)

    async def _migrate(self, conn: asyncpg.Connection, attempt: _Attempt) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            if applied and max(applied) > SCHEMA_VERSION:  # forward only: a newer release's schema is left alone
                raise schema_too_new(self._where, max(applied), SCHEMA_VERSION)
            for number, sql in MIGRATIONS:
                if number in applied:
                    continue
                log.info("applying PostgreSQL migration %d", number)
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
            attempt.commit_sent = True

    async def ping(self) -> None:
        await self._fetchrow("SELECT 1")

    # -- handles -------------------------------------------------------------------------------
    @staticmethod
    def _row(row: asyncpg.Record) -> StoredHandle:
        return StoredHandle(row[0], bytes(row[1]), row[2], row[3], row[4])

    async def get(self, key: str) -> StoredHandle | None:
        row = await self._fetchrow(_GET, key)
        return self._row(row) if row else None

    async def get_many(self, keys: Sequence[str]) -> dict[str, StoredHandle]:
        if not keys:
            return {}
        rows = await self._fetch(_GET_MANY, list(keys))
        return {r[0]: self._row(r) for r in rows}

    async def exists_many(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        rows = await self._fetch(_EXISTS_MANY, list(keys))
        return {r[0]: r[1] for r in rows}

    async def current_version(self) -> int:
        """The committed version watermark (see the module docstring): every write with a version
        <= the value returned is committed; every write not yet visible will get a larger one."""
        row = await self._fetchrow("SELECT version FROM idnode_state")
        return int(row[0]) if row else 0

    async def write(
        self, writes: Sequence[HandleWrite], *, now: int, atomic: bool = True, audit: AuditRecord | None = None
    ) -> list[WriteResult]:
        keys = [w.key for w in writes]
        if len(set(keys)) != len(keys):
            raise InvalidRequest("the same handle appears more than once in one write")
        if not writes:
            return []
        records = _Records(writes)

        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> list[WriteResult]:
            async with conn.transaction():
                version, next_id, have = await self._check(conn, writes)
                plan = _classify(writes, have, atomic)
                if not isinstance(plan, _Plan):
                    raise _NotWritten(plan)  # rolls back the version increment
                results = await self._apply(conn, writes, records, have, plan, version, next_id, now)
                await insert_audit(conn, audit)
                attempt.commit_sent = True
            return results

        try:
            return await self._run(run)
        except _NotWritten as nothing:
            return nothing.results
        finally:
            records.cancel()

    @staticmethod
    async def _check(conn: asyncpg.Connection, writes: Sequence[HandleWrite]) -> tuple[int, int, dict[int, _Existing]]:
        """Inside the caller's transaction: take the version lock (held until the transaction ends),
        then read which of the keys exist."""
        version, next_id = await conn.fetchrow(_LOCK)
        rows = await conn.fetch(_CHECK, [w.key for w in writes])
        have = {r[0]: _Existing(r[1], r[2], r[3], r[4], r[5]) for r in rows}
        return version, next_id, have

    @staticmethod
    async def _apply(
        conn: asyncpg.Connection,
        writes: Sequence[HandleWrite],
        records: _Records,
        have: Mapping[int, _Existing],
        plan: _Plan,
        version: int,
        next_id: int,
        now: int,
    ) -> list[WriteResult]:
        """Apply a checked plan (handles, listing buckets, counters) and build the results."""
        await records.ready()
        head = _head(version)
        day = day_number(now)
        args: dict[str, Any] = {
            "version": version,
            "now": now,
            "day": day,
            "hour": hour_of(now),
            "change_month": day // 100,
        }
        buckets: dict[tuple[str, int], int] = {}
        counts: dict[tuple[int, int], int] = {}
        queued = [(have[i].id, have[i].prefix) for i in (*plan.deletes, *plan.replaces)]
        queued += [(next_id + i, writes[i].prefix) for i in plan.creates]
        args["q_hids"], args["q_prefixes"] = [h for h, _ in queued], [p for _, p in queued]
        if plan.deletes:
            args["del_keys"] = [writes[i].key for i in plan.deletes]
            for i in plan.deletes:
                old = have[i]
                bk = (old.prefix, old.id // LIST_BUCKET)
                buckets[bk] = buckets.get(bk, 0) - 1
                if old.enterprise_id is not None:
                    ck = (old.enterprise_id, old.created_day)
                    counts[ck] = counts.get(ck, 0) - 1
        if plan.replaces:
            args["upd_keys"] = [writes[i].key for i in plan.replaces]
            args["upd_handles"] = [writes[i].handle for i in plan.replaces]
            args["upd_records"] = [records.record(i, version, head) for i in plan.replaces]
        copied = 0
        if plan.creates:
            args["id_span"] = plan.creates[-1] + 1
            for i in plan.creates:
                w = writes[i]
                bk = (w.prefix, (next_id + i) // LIST_BUCKET)
                buckets[bk] = buckets.get(bk, 0) + 1
                if w.enterprise_id is not None:
                    ck = (w.enterprise_id, day)
                    counts[ck] = counts.get(ck, 0) + 1
            if len(plan.creates) >= COPY_THRESHOLD:
                rows = (
                    (w.prefix, next_id + i, w.key, w.handle, w.enterprise_id, now, day, now, version, rec)
                    for i, w, rec in ((i, writes[i], records.record(i, version, head)) for i in plan.creates)
                )
                status = await conn.copy_records_to_table("handles", records=rows, columns=HANDLES_COPY_COLUMNS)
                copied = int(status.rsplit(" ", 1)[-1])
            else:
                args["ins_prefixes"] = [writes[i].prefix for i in plan.creates]
                args["ins_ids"] = [next_id + i for i in plan.creates]
                args["ins_keys"] = [writes[i].key for i in plan.creates]
                args["ins_handles"] = [writes[i].handle for i in plan.creates]
                args["ins_eids"] = [writes[i].enterprise_id for i in plan.creates]
                args["ins_records"] = [records.record(i, version, head) for i in plan.creates]
        bucket_rows = [(p, b, n) for (p, b), n in buckets.items() if n]
        if bucket_rows:
            args["b_prefixes"], args["b_buckets"], args["b_deltas"] = (list(c) for c in zip(*bucket_rows, strict=True))
        count_rows = [(e, d, n) for (e, d), n in counts.items() if n]
        if count_rows:
            args["c_eids"], args["c_days"], args["c_deltas"] = (list(c) for c in zip(*count_rows, strict=True))
        sql, names = _numbered(
            _apply_sql(
                bool(plan.deletes),
                bool(plan.replaces),
                "ins_keys" in args,
                bool(plan.creates),
                bool(bucket_rows),
                bool(count_rows),
            )
        )
        done = await conn.fetchrow(sql, *(args[n] for n in names))
        applied = (done.get("deleted", 0), done.get("replaced", 0), done.get("created", 0) + copied)
        expected = (len(plan.deletes), len(plan.replaces), len(plan.creates))
        if applied != expected:
            raise ServerError(f"store inconsistency: applied {applied} deletes/replaces/creates, expected {expected}")
        out: list[WriteResult] = []
        for i, (w, r) in enumerate(zip(writes, plan.results, strict=True)):
            if r is not None:
                out.append(r)
            elif w.values is None:
                out.append(WriteResult(WriteOutcome.DELETED, version))
            elif i in have:
                out.append(WriteResult(WriteOutcome.REPLACED, version))
            else:
                out.append(WriteResult(WriteOutcome.CREATED, version))
        return out

    async def list_handles(self, prefix: str, page: int, page_size: int) -> tuple[int, list[str]]:
        if page_size <= 0:
            row = await self._fetchrow(_COUNT, prefix)
            return (int(row[0]) if row else 0), []
        skip = max(0, page * page_size)  # SQLite treats a negative OFFSET as 0
        rows = await self._fetch(_LIST, prefix, skip, page_size)
        total = int(rows[0][0]) if rows else 0
        return total, [r[1] for r in rows if r[1] is not None]

    async def handles_from(
        self, prefix: str, limit: int, *, start: str | None = None, after: int = -1
    ) -> list[ListedHandle]:
        rows = await self._fetch(_FROM, prefix, after, start, max(0, limit))
        return [ListedHandle(r[0], r[1], bytes(r[2])) for r in rows]

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
        low, op = (after, ">") if after is not None and after >= start else (start, ">=")
        sql = f'SELECT hkey, handle FROM handles WHERE prefix = $1 AND hkey {op} ($2 COLLATE "C")'
        args: list[object] = [prefix, low]
        if end is not None:
            args.append(end)
            sql += f' AND hkey < (${len(args)} COLLATE "C")'
        if before is not None:
            args.append(before)
            sql += f' AND hkey < (${len(args)} COLLATE "C") ORDER BY hkey DESC'
        else:
            sql += " ORDER BY hkey"
        args.append(max(0, limit))
        sql += f" LIMIT ${len(args)}"
        rows = await self._fetch(sql, *args)
        found = [(r[0], r[1]) for r in rows]
        return found[::-1] if before is not None else found

    # -- promoters and enterprises -------------------------------------------------------------
    @staticmethod
    def _conflict(exc: asyncpg.UniqueViolationError, **names: str) -> InvalidRequest:
        template = _UNIQUE_MESSAGES.get(exc.constraint_name or "")
        if template is None:
            return InvalidRequest(f"conflicting data: {exc}")
        return InvalidRequest(template.format(**names))

    async def add_promoter(self, name: str, uscc: str, *, now: int, audit: AuditRecord | None = None) -> Promoter:
        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> Promoter:
            async with conn.transaction():
                if await conn.fetchval("SELECT 1 FROM promoters WHERE uscc = $1", uscc):
                    raise InvalidRequest(f"a promoter with credit code {uscc} already exists")
                try:
                    pid = await conn.fetchval(
                        "INSERT INTO promoters (name, uscc, created_at) VALUES ($1, $2, $3) RETURNING id",
                        name,
                        uscc,
                        now,
                    )
                except asyncpg.UniqueViolationError as exc:  # a concurrent insert won
                    raise self._conflict(exc, uscc=uscc) from None
                await insert_audit(conn, audit)
                attempt.commit_sent = True
            return Promoter(pid, name, uscc, now)

        return await self._run(run)

    async def list_promoters(self) -> list[Promoter]:
        rows = await self._fetch("SELECT id, name, uscc, created_at FROM promoters ORDER BY id")
        return [Promoter(*r) for r in rows]

    async def get_promoter(self, ref: int | str) -> Promoter | None:
        col = "id" if isinstance(ref, int) else "uscc"
        row = await self._fetchrow(f"SELECT id, name, uscc, created_at FROM promoters WHERE {col} = $1", ref)
        return Promoter(*row) if row else None

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
        writes = [prefix_write]
        records = _Records(writes)

        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> Enterprise:
            async with conn.transaction():
                # The version lock first: it serialises this with every handle write and every other
                # enterprise, so the checks below cannot race and no id is burnt on a refusal.
                version, next_id, have = await self._check(conn, writes)
                if await conn.fetchval("SELECT 1 FROM enterprises WHERE uscc = $1", uscc):
                    raise InvalidRequest(f"an enterprise with credit code {uscc} already exists")
                if await conn.fetchval("SELECT 1 FROM enterprises WHERE prefix_key = $1", prefix.upper()):
                    raise InvalidRequest(f"prefix {prefix} is already allocated")
                plan = _classify(writes, have, True)
                if not isinstance(plan, _Plan):
                    raise InvalidRequest(f"prefix handle 0.NA/{prefix} already exists")
                try:
                    eid = await conn.fetchval(
                        "INSERT INTO enterprises (name, uscc, prefix, prefix_key, status, created_at) "
                        "VALUES ($1, $2, $3, $4, 'active', $5) RETURNING id",
                        name,
                        uscc,
                        prefix,
                        prefix.upper(),
                        now,
                    )
                except asyncpg.UniqueViolationError as exc:
                    raise self._conflict(exc, uscc=uscc, prefix=prefix) from None
                await conn.execute(
                    "INSERT INTO attributions (enterprise_id, promoter_id, effective_at) VALUES ($1, $2, $3)",
                    eid,
                    promoter_id,
                    now,
                )
                await self._apply(conn, writes, records, have, plan, version, next_id, now)
                await insert_audit(conn, audit)
                attempt.commit_sent = True
            return Enterprise(eid, name, uscc, prefix, "active", promoter_id, now)

        return await self._run(run)

    async def list_enterprises(self) -> list[Enterprise]:
        rows = await self._fetch(_ENTERPRISE_SQL + " ORDER BY e.id")
        return [Enterprise(*r) for r in rows]

    async def get_enterprise(self, ref: int | str) -> Enterprise | None:
        if isinstance(ref, int):
            row = await self._fetchrow(_ENTERPRISE_SQL + " WHERE e.id = $1", ref)
        else:
            row = await self._fetchrow(
                _ENTERPRISE_SQL + " WHERE e.prefix_key = $1 OR e.uscc = $1 ORDER BY e.id LIMIT 1", ref.upper()
            )
        return Enterprise(*row) if row else None

    async def enterprise_prefixes(self) -> list[str]:
        rows = await self._fetch("SELECT prefix FROM enterprises ORDER BY id")
        return [r[0] for r in rows]

    async def move_enterprise(
        self, enterprise_id: int, promoter_id: int, *, effective_at: int, audit: AuditRecord | None = None
    ) -> None:
        await self._execute(
            "INSERT INTO attributions (enterprise_id, promoter_id, effective_at) VALUES ($1, $2, $3)",
            enterprise_id,
            promoter_id,
            effective_at,
            audit=audit,
        )

    async def set_enterprise_status(self, enterprise_id: int, status: str, *, audit: AuditRecord | None = None) -> None:
        await self._execute("UPDATE enterprises SET status = $1 WHERE id = $2", status, enterprise_id, audit=audit)

    async def attributions(self) -> list[Attribution]:
        rows = await self._fetch(
            "SELECT enterprise_id, promoter_id, effective_at FROM attributions ORDER BY effective_at, seq"
        )
        return [Attribution(*r) for r in rows]

    # -- GS1 company prefixes --------------------------------------------------------------------
    async def add_gs1_prefix(
        self, enterprise_id: int, company_prefix: str, *, now: int, limit: int
    ) -> tuple[Gs1Prefix, bool]:
        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> tuple[Gs1Prefix, bool]:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", GS1_LOCK)
                rows = await conn.fetch(
                    f"{_GS1_SQL} WHERE g.company_prefix = ANY($1::text[]) "
                    "OR (g.company_prefix > $2 AND g.company_prefix < $3) ORDER BY g.company_prefix",
                    gs1_shorter(company_prefix),
                    company_prefix,
                    company_prefix + ":",
                )
                found = [Gs1Prefix(*r) for r in rows]
                gs1_check_conflicts(found, enterprise_id, company_prefix)
                same = next((p for p in found if p.company_prefix == company_prefix), None)
                if same is not None:
                    return same, False
                held = await conn.fetchval("SELECT count(*) FROM gs1_prefixes WHERE enterprise_id = $1", enterprise_id)
                gs1_check_limit(held, limit)
                prefix = await conn.fetchval(
                    "WITH i AS (INSERT INTO gs1_prefixes (company_prefix, enterprise_id, created_at) "
                    "VALUES ($1, $2, $3)) SELECT prefix FROM enterprises WHERE id = $2",
                    company_prefix,
                    enterprise_id,
                    now,
                )
                attempt.commit_sent = True
            return Gs1Prefix(company_prefix, enterprise_id, prefix, now), True

        return await self._run(run)

    async def list_gs1_prefixes(self, enterprise_id: int | None = None) -> list[Gs1Prefix]:
        if enterprise_id is None:
            rows = await self._fetch(_GS1_SQL + " ORDER BY g.company_prefix")
        else:
            rows = await self._fetch(_GS1_SQL + " WHERE g.enterprise_id = $1 ORDER BY g.company_prefix", enterprise_id)
        return [Gs1Prefix(*r) for r in rows]

    async def remove_gs1_prefix(self, enterprise_id: int, company_prefix: str) -> bool:
        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> bool:
            async with conn.transaction():
                status = await conn.execute(
                    "DELETE FROM gs1_prefixes WHERE company_prefix = $1 AND enterprise_id = $2",
                    company_prefix,
                    enterprise_id,
                )
                attempt.commit_sent = True
            return status != "DELETE 0"

        return await self._run(run)

    async def find_gs1_prefix(self, candidates: Sequence[str]) -> Gs1Prefix | None:
        if not candidates:
            return None
        row = await self._fetchrow(
            f"{_GS1_SQL} WHERE g.company_prefix = ANY($1::text[]) ORDER BY length(g.company_prefix) DESC LIMIT 1",
            list(candidates),
        )
        return Gs1Prefix(*row) if row else None

    # -- counters ------------------------------------------------------------------------------
    async def registration_counts(self, from_day: int, to_day: int, before_hour: int) -> Mapping[int, int]:
        how = rollup.plan(from_day, to_day, before_hour)
        parts: list[str] = []
        args: list[int] = []

        def arg(value: int) -> str:
            args.append(value)
            return f"${len(args)}::bigint"

        if how.full_months is not None:
            first, end = how.full_months
            parts.append(
                "SELECT enterprise_id, SUM(delta) AS n FROM registration_months WHERE month >= "
                f"{arg(first)} AND month < {arg(end)} AND change_month < {arg(how.before_change_month)} "
                "GROUP BY enterprise_id"
            )
            if how.partial_hours is not None:
                a, b = how.partial_hours
                parts.append(
                    f"SELECT enterprise_id, SUM(delta) AS n FROM registration_counts WHERE hour >= {arg(a)} "
                    f"AND hour < {arg(b)} AND day >= {arg(first * 100 + 1)} AND day < {arg(end * 100 + 1)} "
                    "GROUP BY enterprise_id"
                )
        for a, b in how.edge_days:
            parts.append(
                f"SELECT enterprise_id, SUM(delta) AS n FROM registration_counts WHERE day >= {arg(a)} "
                f"AND day < {arg(b)} AND hour < {arg(before_hour)} GROUP BY enterprise_id"
            )
        if not parts:
            return {}
        sql = f"SELECT enterprise_id, SUM(n) FROM ({' UNION ALL '.join(parts)}) p GROUP BY enterprise_id"
        rows = await self._fetch(sql, *args)
        return {r[0]: int(r[1]) for r in rows}

    # -- resolution statistics -------------------------------------------------------------------
    async def add_resolution_counts(self, batch: str, counts: Sequence[ResolutionCount], *, now: int) -> bool:
        # Rows in key order: workers flushing together then lock shared rows in the same order (no deadlock).
        rows = sorted((c.prefix, c.day, c.interface, c.found, c.not_found) for c in counts)
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[], [], [], [], []]

        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> bool:
            async with conn.transaction():
                status = await conn.execute(
                    "INSERT INTO resolution_batches (batch, added_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    batch,
                    now,
                )
                if status.endswith(" 0"):
                    return False
                await conn.execute(_ADD_RESOLUTIONS, *columns)
                await conn.execute(
                    "DELETE FROM resolution_batches WHERE added_at < $1", now - RESOLUTION_BATCH_DAYS * 86400
                )
                attempt.commit_sent = True
            return True

        return await self._run(run)

    async def resolution_counts(self, from_day: int, to_day: int, prefix: str | None) -> list[ResolutionCount]:
        if prefix is None:
            rows = await self._fetch(
                "SELECT '', day, interface, SUM(found), SUM(not_found) FROM resolution_counts "
                "WHERE day >= $1 AND day < $2 GROUP BY day, interface ORDER BY day, interface",
                from_day,
                to_day,
            )
        else:
            rows = await self._fetch(
                "SELECT prefix, day, interface, found, not_found FROM resolution_counts "
                "WHERE prefix = $1 AND day >= $2 AND day < $3 ORDER BY day, interface",
                prefix,
                from_day,
                to_day,
            )
        return [ResolutionCount(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows]

    async def resolution_prefix_totals(self, from_day: int, to_day: int) -> list[ResolutionCount]:
        rows = await self._fetch(
            "SELECT prefix, interface, SUM(found), SUM(not_found) FROM resolution_counts "
            "WHERE day >= $1 AND day < $2 GROUP BY prefix, interface ORDER BY prefix, interface",
            from_day,
            to_day,
        )
        return [ResolutionCount(r[0], 0, r[1], int(r[2]), int(r[3])) for r in rows]

    async def registrations_by_day(self, enterprise_id: int, from_day: int, to_day: int) -> Mapping[int, int]:
        rows = await self._fetch(
            "SELECT day, SUM(delta) FROM registration_counts WHERE enterprise_id = $1 AND day >= $2 AND day < $3 "
            "GROUP BY day",
            enterprise_id,
            from_day,
            to_day,
        )
        return {int(r[0]): int(r[1]) for r in rows}

    # -- console sessions ------------------------------------------------------------------------
    async def put_console_session(self, id_hash: str, identity: str, data: str, *, now: int, expires_at: int) -> None:
        await self._execute(
            "INSERT INTO console_sessions (id_hash, identity, data, created_at, last_seen, expires_at) "
            "VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (id_hash) DO UPDATE SET data = excluded.data, "
            "last_seen = excluded.last_seen",
            id_hash,
            identity,
            data,
            now,
            expires_at,
        )

    async def get_console_session(self, id_hash: str) -> ConsoleSession | None:
        row = await self._fetchrow(
            "SELECT identity, data, created_at, last_seen, expires_at FROM console_sessions WHERE id_hash = $1",
            id_hash,
        )
        return ConsoleSession(row[0], row[1], int(row[2]), int(row[3]), int(row[4])) if row else None

    async def touch_console_session(self, id_hash: str, *, now: int) -> None:
        await self._execute("UPDATE console_sessions SET last_seen = $2 WHERE id_hash = $1", id_hash, now)

    async def delete_console_session(self, id_hash: str) -> None:
        await self._execute("DELETE FROM console_sessions WHERE id_hash = $1", id_hash)

    async def purge_console_sessions(self, *, now: int, idle_before: int) -> int:
        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> int:
            async with conn.transaction():
                status = await conn.execute(
                    "DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen < $2", now, idle_before
                )
                attempt.commit_sent = True
            return int(status.split()[-1])

        return await self._run(run)

    # -- metadata ------------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None:
        row = await self._fetchrow("SELECT value FROM meta WHERE key = $1", key)
        return row[0] if row else None

    async def add_meta(self, key: str, value: str) -> str:
        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> str:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, value
                )
                stored = await conn.fetchval("SELECT value FROM meta WHERE key = $1", key)
                attempt.commit_sent = True
            return stored

        return await self._run(run)

    # -- templates and idempotency -------------------------------------------------------------
    async def add_template(
        self, scope: str, template_id: str, version: int, body: str, *, now: int, audit: AuditRecord | None = None
    ) -> None:
        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> None:
            async with conn.transaction():
                status = await conn.execute(
                    "INSERT INTO templates (scope, id, version, body, created_at) VALUES ($1, $2, $3, $4, $5) "
                    "ON CONFLICT DO NOTHING",
                    scope,
                    template_id,
                    version,
                    body,
                    now,
                )
                if status.endswith(" 0"):
                    raise InvalidRequest(f"template {template_id} version {version} already exists")
                await insert_audit(conn, audit)
                attempt.commit_sent = True

        await self._run(run)

    async def get_template(self, scope: str, template_id: str, version: int | None) -> tuple[int, str] | None:
        if version is None:
            row = await self._fetchrow(
                "SELECT version, body FROM templates WHERE scope = $1 AND id = $2 ORDER BY version DESC LIMIT 1",
                scope,
                template_id,
            )
        else:
            row = await self._fetchrow(
                "SELECT version, body FROM templates WHERE scope = $1 AND id = $2 AND version = $3",
                scope,
                template_id,
                version,
            )
        return (row[0], row[1]) if row else None

    async def list_templates(self) -> list[tuple[str, str, int, str]]:
        rows = await self._fetch("SELECT scope, id, version, body FROM templates ORDER BY scope, id, version")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def get_idempotent(self, key: str) -> tuple[str, bytes] | None:
        row = await self._fetchrow("SELECT request_hash, response FROM idempotency WHERE key = $1", key)
        return (row[0], bytes(row[1])) if row else None

    async def add_idempotent(self, key: str, request_hash: str, response: bytes, *, now: int) -> None:
        await self._execute(
            "INSERT INTO idempotency (key, request_hash, response, created_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (key) DO NOTHING",
            key,
            request_hash,
            response,
            now,
        )

    # -- audit log ------------------------------------------------------------------------------
    async def add_audit(self, at: int, actor: str, action: str, target: str, source: str, detail: str) -> int:
        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> int:
            async with conn.transaction():
                entry_id = await conn.fetchval(
                    "INSERT INTO audit_log (at, actor, action, target, source, detail) "
                    "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    at,
                    actor,
                    action,
                    target,
                    source,
                    detail,
                )
                attempt.commit_sent = True
            return int(entry_id)

        return await self._run(run)

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
        where, args = audit_where(before_id, action, target, since, lambda n: f"${n}", actor)
        rows = await self._fetch(
            f"SELECT id, at, actor, action, target, source, detail FROM audit_log{where} "
            f"ORDER BY id DESC LIMIT ${len(args) + 1}",
            *args,
            limit,
        )
        return [AuditEntry(*r) for r in rows]

    async def set_meta(self, key: str, value: str, *, audit: AuditRecord | None = None) -> None:
        await self._execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
            audit=audit,
        )
