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
    (:mod:`registry.stores.postgres_handle_writes`.) Outcomes are decided in Python by
    :func:`~registry.stores.postgres_handle_writes.classify`, the rule of the SQLite store, from one
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
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import asyncpg.exceptions as pgerr

from registry.errors import HandleError, InvalidRequest, ServerError, StoreUnavailable
from registry.stores.base import AuditRecord, CreateStream, schema_too_new
from registry.stores.postgres_audit import PostgresAudit, insert_audit
from registry.stores.postgres_create_stream import PostgresCreateStream
from registry.stores.postgres_enterprises import PostgresEnterprises
from registry.stores.postgres_handle_reads import PostgresHandleReads
from registry.stores.postgres_handle_writes import PostgresHandleWrites
from registry.stores.postgres_jobs import JOBS_DDL, PostgresJobs
from registry.stores.postgres_meta import PostgresMeta
from registry.stores.postgres_part import Attempt
from registry.stores.postgres_sessions import PostgresSessions
from registry.stores.postgres_statistics import PostgresStatistics
from registry.stores.postgres_values import VALUES_DDL, PostgresValues

__all__ = ["HANDLES_DDL", "MIGRATIONS", "SCHEMA_VERSION", "PostgresStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Held (transaction-scoped) while migrations run, so two processes starting together do not race.
MIGRATION_LOCK = 0x69646E6F6465  # "idnode"

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
    # The audit log by actor (the console's and operators' "who did what" filter), newest first.
    (10, "CREATE INDEX audit_log_actor ON audit_log (actor, id);"),
]
# The schema version a store is at once every migration above has run (its highest number).
SCHEMA_VERSION = max(number for number, _ in MIGRATIONS)


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


class PostgresStore(
    PostgresHandleReads,
    PostgresEnterprises,
    PostgresHandleWrites,
    PostgresStatistics,
    PostgresSessions,
    PostgresMeta,
    PostgresAudit,
    PostgresJobs,
    PostgresValues,
):
    """The production store: the pool, failures and retries, the schema and its migrations; each
    table family's methods come from a mixin (``postgres_handle_reads``, ``postgres_handle_writes``,
    ``postgres_enterprises``, …). ``url`` is ``postgresql://user[:password]@host[:port]/database``."""

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
        self._stream_gate = asyncio.Lock()  # one create_stream at a time in this process

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

    async def _run(self, fn: Callable[[asyncpg.Connection, Attempt], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection, mapping failures to the registry's errors. A call that
        met a dead pooled connection is retried once on a fresh one, unless it may have committed."""
        for attempt_no in (1, 2):
            pool = self._pool
            if pool is None:
                raise StoreUnavailable(f"PostgreSQL store at {self._where} is closed")
            attempt = Attempt()
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

    async def create_stream(self, *, now: int, atomic: bool = True) -> CreateStream:
        """``registry.stores.base.HandleStore.create_stream``: see :mod:`registry.stores.postgres_create_stream`."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable(f"PostgreSQL store at {self._where} is closed")
        stream = PostgresCreateStream(
            pool,
            now=now,
            atomic=atomic,
            acquire_timeout=self._acquire_timeout,
            error=self._error_of,
            gate=self._stream_gate,
        )
        await stream.open()
        return stream

    def _error_of(self, exc: BaseException) -> BaseException:
        """The registry's error for a driver's exception (as :meth:`_run` maps them, without retrying)."""
        if isinstance(exc, HandleError):
            return exc
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            return InvalidRequest(f"conflicting data: {exc}")
        if isinstance(exc, asyncpg.DataError):
            return InvalidRequest(f"invalid data for the store: {exc}")
        if isinstance(exc, _UNAVAILABLE):
            return self._unavailable(exc)
        log.error("PostgreSQL store error in a write stream: %s: %s", type(exc).__name__, exc)
        return ServerError(f"store error: {type(exc).__name__}: {exc}")

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run(conn: asyncpg.Connection, _: Attempt) -> list[asyncpg.Record]:
            return await conn.fetch(sql, *args)

        return await self._run(run)

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async def run(conn: asyncpg.Connection, _: Attempt) -> asyncpg.Record | None:
            return await conn.fetchrow(sql, *args)

        return await self._run(run)

    async def _execute(self, sql: str, *args: Any, audit: AuditRecord | None = None) -> None:
        """One write statement (and ``audit``) in its own transaction (so a connection lost before
        COMMIT is retried)."""

        async def run(conn: asyncpg.Connection, attempt: Attempt) -> None:
            async with conn.transaction():
                await conn.execute(sql, *args)
                await insert_audit(conn, audit)
                attempt.commit_sent = True

        await self._run(run)

    async def _migrate(self, conn: asyncpg.Connection, attempt: Attempt) -> None:
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
