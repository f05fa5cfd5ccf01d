"""PostgreSQL backend: the production store, on an asyncpg connection pool.

Same semantics as :mod:`registry.stores.sqlite` (outcomes, versions, counters, listing order); the
module docstring of each piece below says how it is done here.

Versions and ``current_version()``
    One row, ``idnode_state``, holds the global write version and the next handle id. Every handle
    write begins by incrementing that row (``UPDATE … RETURNING``), which locks it until the
    transaction ends. So handle writes are serialised, versions are handed out in commit order and
    a rolled-back write leaves no trace (no gap, unlike a sequence). ``current_version()`` reads the
    committed value, which makes it a *watermark*: every write with a version <= V is committed and
    visible to any read that starts after ``current_version()`` returned V, and every write not yet
    visible will commit with a version > V. A cache may therefore tag a fill ("not found", or a
    record) with a V read *before* it read the store, and let any invalidation carrying a larger
    version win. (A sequence would not give this: numbers are taken at transaction start and commit
    out of order, and rolled-back ones are burnt.)

    The same lock makes the existence and compare-and-set checks race-free across processes, exactly
    like SQLite's single writer: after the lock is granted, each READ COMMITTED statement sees every
    write committed before. Row locks per key would not buy more parallelism, since every write must
    hold the version row until it commits anyway. What can run before the lock does: packing the
    records and copying them to the server.

Bulk writes
    The writes of one call go into a per-connection temporary table ``idnode_w`` (``ON COMMIT
    DELETE ROWS``): large calls with binary ``COPY``, small ones with one ``INSERT … unnest``. Then,
    under the lock: one statement marks which keys exist (and returns their versions for the
    outcome checks), and one statement with data-modifying CTEs deletes, updates and inserts
    set-based and folds the listing-bucket and counter deltas into upserts. The packed record is
    ``[FORMAT, version, handle, values]`` in msgpack; everything after the version is packed before
    the lock and the version head (the same for every record of a call) is concatenated in SQL.

Planner settings
    Every query here is a key lookup. The pool's sessions run with hash and merge joins disabled, so
    joining a call's keys against ``handles`` is always an index probe per key: a hash join would
    scan the whole table, and a cached plan could then repeat that scan for every single write.

Failures
    Connection failures (refused, reset, shutdown, timeouts, pool closed) raise
    :class:`StoreUnavailable`; a call that met a connection the server had dropped (a restart) is
    retried once on a fresh one, unless it may have committed. Constraint violations raise
    :class:`InvalidRequest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import asyncpg.exceptions as pgerr
import msgpack

from registry.days import day_number, hour_of
from registry.errors import InvalidRequest, ServerError, StoreUnavailable
from registry.model import HandleValue, Record
from registry.packing import FORMAT, pack_record, pack_values
from registry.stores.base import (
    LIST_BUCKET,
    MUST_NOT_EXIST,
    Attribution,
    Enterprise,
    HandleWrite,
    Promoter,
    StoredHandle,
    WriteOutcome,
    WriteResult,
)

__all__ = ["MIGRATIONS", "PostgresStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Held (transaction-scoped) while migrations run, so two processes starting together do not race.
MIGRATION_LOCK = 0x69646E6F6465  # "idnode"

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
        CREATE TABLE handles (
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
        CREATE UNIQUE INDEX handles_hkey ON handles (hkey);
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
]

# -- the per-connection work table of write() ---------------------------------------------------
_WORK_COLUMNS = ["ord", "key", "handle", "prefix", "eid", "del", "expect", "tail"]
_CREATE_WORK = """
CREATE TEMP TABLE IF NOT EXISTS idnode_w (
    ord INTEGER NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    handle TEXT,
    prefix TEXT COLLATE "C",
    eid BIGINT,
    del BOOLEAN NOT NULL,
    expect BIGINT NOT NULL,
    tail BYTEA,
    have BIGINT
) ON COMMIT DELETE ROWS
"""
_FILL_WORK = """
INSERT INTO idnode_w (ord, key, handle, prefix, eid, del, expect, tail)
SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bool[], $7::bigint[],
                     $8::bytea[])
"""
COPY_THRESHOLD = 500  # rows; below this one INSERT … unnest beats COPY's extra round trip
PACK_CHUNK = 2000  # rows packed per step off the event loop while COPY streams the previous step

_LOCK = "UPDATE idnode_state SET version = version + 1 RETURNING version, next_id"
_CHECK = "UPDATE idnode_w w SET have = h.version FROM handles h WHERE h.hkey = w.key RETURNING w.ord, h.version"
# The outcome rule of _classify, in SQL: a row is written only when it passed its expectation.
_OK = (
    f"NOT ((w.expect = {MUST_NOT_EXIST} AND w.have IS NOT NULL)"
    " OR (w.have IS NULL AND (w.del OR w.expect >= 0))"
    " OR (w.expect >= 0 AND w.have <> w.expect))"
)


def _apply_parts(deletes: bool, replaces: bool, creates: bool) -> str:
    """The apply statement with only the parts a call needs (each part scans the work table)."""
    ctes: list[str] = []
    counts: list[str] = []
    bucket_src: list[str] = []
    counter_src: list[str] = []
    if deletes:
        ctes.append(
            f"""d AS (
    DELETE FROM handles h USING idnode_w w
    WHERE w.del AND w.have IS NOT NULL AND {_OK} AND h.hkey = w.key
    RETURNING h.id, h.prefix, h.enterprise_id, h.created_day
)"""
        )
        counts.append("(SELECT count(*) FROM d) AS deleted")
        bucket_src.append(f"SELECT prefix, id / {LIST_BUCKET} AS bucket, -1 AS n FROM d")
        counter_src.append("SELECT enterprise_id, created_day AS day, -1 AS n FROM d WHERE enterprise_id IS NOT NULL")
    if replaces:
        ctes.append(
            f"""u AS (
    UPDATE handles h SET record = @head::bytea || w.tail, handle = w.handle, version = @version::bigint,
                         updated_at = @now::bigint
    FROM idnode_w w
    WHERE NOT w.del AND w.have IS NOT NULL AND {_OK} AND h.hkey = w.key
    RETURNING 1
)"""
        )
        counts.append("(SELECT count(*) FROM u) AS replaced")
    if creates:
        ctes.append(
            f"""i AS (
    INSERT INTO handles (prefix, id, hkey, handle, enterprise_id, created_at, created_day, updated_at, version,
                         record)
    SELECT w.prefix, @next_id::bigint + w.ord, w.key, w.handle, w.eid, @now::bigint, @day::integer, @now::bigint,
           @version::bigint, @head::bytea || w.tail
    FROM idnode_w w
    WHERE NOT w.del AND w.have IS NULL AND {_OK}
    RETURNING id, prefix, enterprise_id
)""",
        )
        ctes.append("s AS (UPDATE idnode_state SET next_id = next_id + @id_span::bigint RETURNING 1)")
        counts += ["(SELECT count(*) FROM i) AS created", "(SELECT count(*) FROM s) AS state"]
        bucket_src.append(f"SELECT prefix, id / {LIST_BUCKET} AS bucket, 1 AS n FROM i")
        counter_src.append("SELECT enterprise_id, @day::integer AS day, 1 AS n FROM i WHERE enterprise_id IS NOT NULL")
    if bucket_src:
        union = "\n        UNION ALL\n        ".join(bucket_src)
        ctes.append(
            f"""b AS (
    INSERT INTO list_buckets (prefix, bucket, n)
    SELECT prefix, bucket, SUM(n) FROM (
        {union}
    ) x
    GROUP BY prefix, bucket HAVING SUM(n) <> 0
    ON CONFLICT (prefix, bucket) DO UPDATE SET n = list_buckets.n + excluded.n
    RETURNING 1
)"""
        )
        counts.append("(SELECT count(*) FROM b) AS buckets")
    if counter_src:
        union = "\n        UNION ALL\n        ".join(counter_src)
        ctes.append(
            f"""c AS (
    INSERT INTO registration_counts (enterprise_id, day, hour, delta)
    SELECT enterprise_id, day, @hour::bigint, SUM(n) FROM (
        {union}
    ) x
    GROUP BY enterprise_id, day HAVING SUM(n) <> 0
    ON CONFLICT (enterprise_id, day, hour) DO UPDATE SET delta = registration_counts.delta + excluded.delta
    RETURNING 1
)"""
        )
        counts.append("(SELECT count(*) FROM c) AS counters")
    return "WITH\n" + ",\n".join(ctes) + "\nSELECT " + ", ".join(counts)


@functools.cache
def _apply_sql(deletes: bool, replaces: bool, creates: bool) -> tuple[str, tuple[str, ...]]:
    """The apply statement for a call, with ``@name`` placeholders numbered: (sql, argument names)."""
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return re.sub(r"@([a-z_]+)", number, _apply_parts(deletes, replaces, creates)), tuple(names)


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

_HANDLE_COLUMNS = "h.hkey, h.record, h.version, h.enterprise_id, h.created_at"
_GET = f"SELECT {_HANDLE_COLUMNS} FROM handles h WHERE h.hkey = $1"
_GET_MANY = f'SELECT {_HANDLE_COLUMNS} FROM unnest($1::text[]) k(key) JOIN handles h ON h.hkey = (k.key COLLATE "C")'
_EXISTS_MANY = 'SELECT h.hkey, h.version FROM unnest($1::text[]) k(key) JOIN handles h ON h.hkey = (k.key COLLATE "C")'

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
            for h in ("0.NA/x", "88.118.8/é" * 10)
        )
    except Exception:  # pragma: no cover
        return False


# When False (packing.py changed its layout) whole records are packed after the lock instead.
_SPLICE_OK = _splice_ok()


def _work_rows(
    writes: Sequence[HandleWrite], start: int = 0, end: int | None = None, version: int | None = None
) -> list[tuple]:
    """Rows for ``idnode_w`` of ``writes[start:end]``. With ``version`` None the record is packed
    without its head (see _tail), else whole."""
    rows = []
    for n in range(start, len(writes) if end is None else end):
        w = writes[n]
        if w.values is None:
            blob = None
        elif version is None:
            blob = _tail(w.handle, w.values)
        else:
            blob = pack_record(Record(handle=w.handle, values=w.values, version=version))
        rows.append((n, w.key, w.handle, w.prefix, w.enterprise_id, w.values is None, w.expect, blob))
    return rows


class _WorkRows:
    """The ``idnode_w`` rows of one write() call. Small calls are packed at once; large ones are packed
    in chunks on a worker thread while COPY sends the chunk before (the server works on its core
    meanwhile, and the event loop keeps running). Packed chunks are kept for a retry."""

    def __init__(self, writes: Sequence[HandleWrite]) -> None:
        self.writes = writes
        self.small = len(writes) < COPY_THRESHOLD
        self.rows = _work_rows(writes) if self.small else None
        self._chunks: list[list[tuple]] = []

    async def stream(self) -> AsyncIterator[tuple]:
        loop = asyncio.get_running_loop()
        n = len(self.writes)
        starts = range(0, n, PACK_CHUNK)

        def pack(k: int) -> asyncio.Future[list[tuple]]:
            lo = starts[k]
            return loop.run_in_executor(None, _work_rows, self.writes, lo, min(lo + PACK_CHUNK, n))

        pending: asyncio.Future[list[tuple]] | None = None
        for k in range(len(starts)):
            if k < len(self._chunks):
                rows = self._chunks[k]
            else:
                rows = await (pending or pack(k))
                self._chunks.append(rows)
            pending = pack(k + 1) if k + 1 < len(starts) and k + 1 >= len(self._chunks) else None
            for row in rows:
                yield row


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
# Errors that mean the connection we were given was already dead (the server restarted, or
# terminated the backend): worth one retry on a fresh connection.
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


@dataclass(frozen=True, slots=True)
class _Plan:
    """The checked writes of one call: outcomes so far, and what the apply statement must do."""

    results: list[WriteResult | None]
    deletes: int
    replaces: int
    creates: int
    id_span: int  # handle ids to reserve: a created row gets next_id + its position in the call


def _classify(writes: Sequence[HandleWrite], have: Mapping[int, int], atomic: bool) -> _Plan | list[WriteResult]:
    """The outcome rule of the SQLite store (and of ``_OK``). Returns the final results when nothing is
    to be written, else a plan."""
    results: list[WriteResult | None] = []
    deletes = replaces = creates = id_span = 0
    for i, w in enumerate(writes):
        current = have.get(i)
        if w.expect == MUST_NOT_EXIST and current is not None:
            results.append(WriteResult(WriteOutcome.EXISTS, current))
        elif current is None and (w.values is None or w.expect >= 0):
            results.append(WriteResult(WriteOutcome.MISSING))
        elif w.expect >= 0 and current != w.expect:
            results.append(WriteResult(WriteOutcome.STALE, current))
        else:
            results.append(None)
            if w.values is None:
                deletes += 1
            elif current is None:
                creates += 1
                id_span = i + 1
            else:
                replaces += 1
    todo = deletes + replaces + creates
    if not todo or (atomic and todo != len(writes)):
        return [r or WriteResult(WriteOutcome.NOT_WRITTEN) for r in results]
    return _Plan(results, deletes, replaces, creates, id_span)


def _describe(url: str) -> str:
    """host:port/database of a URL, without credentials, for messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
        return f"{host}:{port}{parts.path or ''}"
    except ValueError:
        return "PostgreSQL"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(_CREATE_WORK)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook. Open transactions are rolled back by asyncpg itself; we never change session
    state (no SET, LISTEN, cursors or session advisory locks), so the default RESET ALL round trip
    on every release is skipped."""


class PostgresStore:
    """The production store. ``url`` is a libpq-style URL, ``postgresql://user@host:5432/db``."""

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
                init=_init_connection,
                reset=_keep_session,
                server_settings={
                    "application_name": self._application_name,
                    "enable_hashjoin": "off",
                    "enable_mergejoin": "off",
                    "jit": "off",  # compiling costs tens of ms and never pays off for key lookups
                    "temp_buffers": "32MB",  # keeps the work table of a 100k-row call in memory
                    "work_mem": "16MB",  # and the apply statement's intermediate rows
                },
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
                if retry:
                    log.info("postgres connection lost (%s); retrying on a fresh connection", type(exc).__name__)
                    with contextlib.suppress(Exception):
                        await pool.expire_connections()
                    continue
                raise self._unavailable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run(conn: asyncpg.Connection, _: _Attempt) -> list[asyncpg.Record]:
            return await conn.fetch(sql, *args)

        return await self._run(run)

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async def run(conn: asyncpg.Connection, _: _Attempt) -> asyncpg.Record | None:
            return await conn.fetchrow(sql, *args)

        return await self._run(run)

    async def _execute(self, sql: str, *args: Any) -> None:
        """One write statement in its own transaction (so a lost connection before COMMIT is retried)."""

        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> None:
            async with conn.transaction():
                await conn.execute(sql, *args)
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

    async def write(self, writes: Sequence[HandleWrite], *, now: int, atomic: bool = True) -> list[WriteResult]:
        keys = [w.key for w in writes]
        if len(set(keys)) != len(keys):
            raise InvalidRequest("the same handle appears more than once in one write")
        if not writes:
            return []
        rows = _WorkRows(writes) if _SPLICE_OK else None

        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> list[WriteResult]:
            async with conn.transaction():
                version, next_id, have, plan = await self._check(conn, writes, rows, atomic)
                if not isinstance(plan, _Plan):
                    raise _NotWritten(plan)  # rolls back the version increment
                results = await self._commit(conn, writes, have, plan, version, next_id, now, rows is not None)
                attempt.commit_sent = True
            return results

        try:
            return await self._run(run)
        except _NotWritten as nothing:
            return nothing.results

    async def _check(
        self, conn: asyncpg.Connection, writes: Sequence[HandleWrite], rows: _WorkRows | None, atomic: bool
    ) -> tuple[int, int, dict[int, int], _Plan | list[WriteResult]]:
        """Inside the caller's transaction: fill the work table, take the version lock (held until the
        transaction ends), read which keys exist and classify the writes."""
        if rows is not None:
            if rows.rows is not None:
                await self._fill(conn, rows.rows)
            else:
                await conn.copy_records_to_table("idnode_w", records=rows.stream(), columns=_WORK_COLUMNS)
        version, next_id = await conn.fetchrow(_LOCK)
        if rows is None:  # the record layout is not the one _tail assumes: pack whole records now
            await self._fill(conn, _work_rows(writes, version=version))
        have = {r[0]: r[1] for r in await conn.fetch(_CHECK)}
        return version, next_id, have, _classify(writes, have, atomic)

    async def _commit(
        self,
        conn: asyncpg.Connection,
        writes: Sequence[HandleWrite],
        have: Mapping[int, int],
        plan: _Plan,
        version: int,
        next_id: int,
        now: int,
        spliced: bool,
    ) -> list[WriteResult]:
        """Apply a checked plan set-based (handles, listing buckets, counters) and build the results."""
        sql, names = _apply_sql(plan.deletes > 0, plan.replaces > 0, plan.creates > 0)
        args = {
            "head": _head(version) if spliced else b"",
            "version": version,
            "now": now,
            "next_id": next_id,
            "day": day_number(now),
            "hour": hour_of(now),
            "id_span": plan.id_span,
        }
        done = await conn.fetchrow(sql, *(args[n] for n in names))
        applied = (done.get("deleted", 0), done.get("replaced", 0), done.get("created", 0))
        if applied != (plan.deletes, plan.replaces, plan.creates):
            raise ServerError(
                f"store inconsistency: applied {applied} deletes/replaces/creates, "
                f"expected {(plan.deletes, plan.replaces, plan.creates)}"
            )
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

    @staticmethod
    async def _fill(conn: asyncpg.Connection, rows: list[tuple]) -> None:
        if len(rows) >= COPY_THRESHOLD:
            await conn.copy_records_to_table("idnode_w", records=rows, columns=_WORK_COLUMNS)
        else:
            await conn.execute(_FILL_WORK, *(list(col) for col in zip(*rows, strict=True)))

    async def list_handles(self, prefix: str, page: int, page_size: int) -> tuple[int, list[str]]:
        if page_size <= 0:
            row = await self._fetchrow(_COUNT, prefix)
            return (int(row[0]) if row else 0), []
        skip = max(0, page * page_size)
        rows = await self._fetch(_LIST, prefix, skip, page_size)
        total = int(rows[0][0]) if rows else 0
        return total, [r[1] for r in rows if r[1] is not None]

    # -- promoters and enterprises -------------------------------------------------------------
    def _conflict(self, exc: asyncpg.UniqueViolationError, **names: str) -> InvalidRequest:
        template = _UNIQUE_MESSAGES.get(exc.constraint_name or "")
        if template is None:
            return InvalidRequest(f"conflicting data: {exc}")
        return InvalidRequest(template.format(**names))

    async def add_promoter(self, name: str, uscc: str, *, now: int) -> Promoter:
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
                except asyncpg.UniqueViolationError as exc:
                    raise self._conflict(exc, uscc=uscc) from None
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
        self, name: str, uscc: str, prefix: str, promoter_id: int, prefix_write: HandleWrite, *, now: int
    ) -> Enterprise:
        rows = _WorkRows([prefix_write]) if _SPLICE_OK else None

        async def run(conn: asyncpg.Connection, attempt: _Attempt) -> Enterprise:
            async with conn.transaction():
                # The version lock first (in _check): it serialises this with every handle write and
                # every other enterprise, so nothing below can race and no id is burnt on a refusal.
                version, next_id, have, plan = await self._check(conn, [prefix_write], rows, True)
                if await conn.fetchval("SELECT 1 FROM enterprises WHERE uscc = $1", uscc):
                    raise InvalidRequest(f"an enterprise with credit code {uscc} already exists")
                if await conn.fetchval("SELECT 1 FROM enterprises WHERE prefix_key = $1", prefix.upper()):
                    raise InvalidRequest(f"prefix {prefix} is already allocated")
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
                await self._commit(conn, [prefix_write], have, plan, version, next_id, now, rows is not None)
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

    async def move_enterprise(self, enterprise_id: int, promoter_id: int, *, effective_at: int) -> None:
        await self._execute(
            "INSERT INTO attributions (enterprise_id, promoter_id, effective_at) VALUES ($1, $2, $3)",
            enterprise_id,
            promoter_id,
            effective_at,
        )

    async def set_enterprise_status(self, enterprise_id: int, status: str) -> None:
        await self._execute("UPDATE enterprises SET status = $1 WHERE id = $2", status, enterprise_id)

    async def attributions(self) -> list[Attribution]:
        rows = await self._fetch(
            "SELECT enterprise_id, promoter_id, effective_at FROM attributions ORDER BY effective_at, seq"
        )
        return [Attribution(*r) for r in rows]

    # -- counters ------------------------------------------------------------------------------
    async def registration_counts(self, from_day: int, to_day: int, before_hour: int) -> Mapping[int, int]:
        rows = await self._fetch(
            "SELECT enterprise_id, SUM(delta) FROM registration_counts "
            "WHERE day >= $1 AND day < $2 AND hour < $3 GROUP BY enterprise_id",
            from_day,
            to_day,
            before_hour,
        )
        return {r[0]: int(r[1]) for r in rows}

    # -- metadata ------------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None:
        row = await self._fetchrow("SELECT value FROM meta WHERE key = $1", key)
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
        )
