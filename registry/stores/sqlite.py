"""SQLite backend: the embedded default. One file under the data directory, WAL mode.

The database holds the node's secrets (key hashes, and the report-signing key unless it is kept in a
file): it and its -wal/-shm files are private to the node's user (0600), created so and tightened
when found open to others (:mod:`registry.private_files`).

Reads run on a small thread pool (one connection per thread); every write runs on a single writer
thread, as datasette does, so SQLite never sees two writers and a transaction is never interleaved.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from registry.days import day_number, hour_of
from registry.errors import InvalidRequest, StoreInUse, StoreUnavailable
from registry.model import Record
from registry.packing import pack_record, unpack_record
from registry.private_files import PRIVATE_FILE, make_private, private_dir
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
from registry.stores.sqlite_jobs import JOBS_DDL, SQLiteJobs, insert_audit
from registry.stores.sqlite_values import VALUES_DDL, SQLiteValues, queue_for_index

__all__ = ["HANDLES_DDL", "LOCK_SUFFIX", "SCHEMA_VERSION", "SQLiteStore", "database_file"]

T = TypeVar("T")

# The identifiers' table, part of migration 1 (a later change to it is a new migration, not an edit here).
# ``{table}`` is ``handles``; the benchmarks create their baseline table from the same text.
HANDLES_DDL = """
    CREATE TABLE {table} (
        id INTEGER PRIMARY KEY,
        hkey TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        enterprise_id INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        version INTEGER NOT NULL,
        record BLOB NOT NULL
    );
    CREATE INDEX {table}_prefix_id ON {table} (prefix, id);
"""

MIGRATIONS: list[str] = [
    # 1: handles, listing buckets, counters, promoters, enterprises, attributions, metadata.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """
    + HANDLES_DDL.format(table="handles")
    + """
    CREATE TABLE list_buckets (
        prefix TEXT NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (prefix, bucket)
    ) WITHOUT ROWID;
    CREATE TABLE registration_counts (
        enterprise_id INTEGER NOT NULL, day INTEGER NOT NULL, hour INTEGER NOT NULL, delta INTEGER NOT NULL,
        PRIMARY KEY (enterprise_id, day, hour)
    ) WITHOUT ROWID;
    CREATE TABLE promoters (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, uscc TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL
    );
    CREATE TABLE enterprises (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, uscc TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL, prefix_key TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL DEFAULT 'active', created_at INTEGER NOT NULL
    );
    CREATE TABLE attributions (
        enterprise_id INTEGER NOT NULL REFERENCES enterprises (id),
        promoter_id INTEGER NOT NULL REFERENCES promoters (id),
        effective_at INTEGER NOT NULL,
        seq INTEGER PRIMARY KEY
    );
    CREATE INDEX attributions_enterprise ON attributions (enterprise_id, effective_at);
    INSERT INTO meta (key, value) VALUES ('write_seq', '0');
    """,
    # 2: metadata templates and idempotent batch replies.
    """
    CREATE TABLE templates (
        scope TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL,
        created_at INTEGER NOT NULL, PRIMARY KEY (scope, id, version)
    ) WITHOUT ROWID;
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY, request_hash TEXT NOT NULL, response BLOB NOT NULL, created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 3: the monthly roll-up of the counters (registry.stores.rollup) and the indexes its queries use.
    # Backfilled with Beijing time as UTC+8 (China has kept it without daylight saving since 1991).
    """
    CREATE TABLE registration_months (
        month INTEGER NOT NULL, change_month INTEGER NOT NULL, enterprise_id INTEGER NOT NULL,
        delta INTEGER NOT NULL, PRIMARY KEY (enterprise_id, month, change_month)
    ) WITHOUT ROWID;
    INSERT INTO registration_months (month, change_month, enterprise_id, delta)
        SELECT day / 100, CAST(strftime('%Y%m', hour * 3600 + 28800, 'unixepoch') AS INTEGER), enterprise_id,
               SUM(delta)
        FROM registration_counts GROUP BY 1, 2, 3;
    CREATE INDEX registration_counts_hour ON registration_counts (hour, day, enterprise_id, delta);
    CREATE INDEX registration_counts_day ON registration_counts (day, hour, enterprise_id, delta);
    """,
    # 4: resolution statistics (resolver.ops.resolutions) and the ids of the flushes already added.
    """
    CREATE TABLE resolution_counts (
        prefix TEXT NOT NULL, day INTEGER NOT NULL, interface TEXT NOT NULL,
        found INTEGER NOT NULL, not_found INTEGER NOT NULL,
        PRIMARY KEY (prefix, day, interface)
    ) WITHOUT ROWID;
    CREATE INDEX resolution_counts_day ON resolution_counts (day, prefix, interface, found, not_found);
    CREATE TABLE resolution_batches (batch TEXT PRIMARY KEY, added_at INTEGER NOT NULL) WITHOUT ROWID;
    CREATE INDEX resolution_batches_added ON resolution_batches (added_at);
    """,
    # 5: GS1 company prefixes of enterprises (GS1 Digital Link resolution).
    """
    CREATE TABLE gs1_prefixes (
        company_prefix TEXT PRIMARY KEY,
        enterprise_id INTEGER NOT NULL REFERENCES enterprises (id),
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX gs1_prefixes_enterprise ON gs1_prefixes (enterprise_id, company_prefix);
    """,
    # 6: the audit log (registry.audit).
    """
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        target TEXT NOT NULL, source TEXT NOT NULL, detail TEXT NOT NULL
    );
    CREATE INDEX audit_log_action ON audit_log (action, id);
    CREATE INDEX audit_log_target ON audit_log (target, id);
    """,
    # 7: console sessions (resolver.console.sessions): only a SHA-256 of each random session id is kept.
    """
    CREATE TABLE console_sessions (
        id_hash TEXT PRIMARY KEY, identity TEXT NOT NULL, data TEXT NOT NULL,
        created_at INTEGER NOT NULL, last_seen INTEGER NOT NULL, expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
    CREATE INDEX console_sessions_seen ON console_sessions (last_seen);
    """,
    # 8: background jobs (registry.jobs): jobs, their files and rejected rows.
    JOBS_DDL,
    # 9: the reverse-lookup value index (registry.value_index): the queue of written handles (every
    # existing handle queued, so the node indexes them), value rows, FTS5 trigram table.
    VALUES_DDL,
]
# The schema version a store is at once every migration above has run (``PRAGMA user_version``).
SCHEMA_VERSION = len(MIGRATIONS)
# Beside the database: every process with the store open holds a shared lock on it, and `idnode
# restore` an exclusive one while it replaces the file (registry.stores.sqlite_files).
LOCK_SUFFIX = "-lock"


def _path_of(url: str) -> str:
    if "://" not in url:
        return url
    rest = url.split("://", 1)[1]
    if rest in (":memory:", "/:memory:", ""):
        return ":memory:"
    # sqlite:///relative.db → relative.db ; sqlite:////abs/path.db → /abs/path.db
    return rest[1:] if rest.startswith("/") else rest


def database_file(url: str) -> str | None:
    """The absolute path of the database file a SQLite store URL names; None for ``:memory:``."""
    path = _path_of(url)
    return None if path == ":memory:" else os.path.abspath(path)


class SQLiteStore(SQLiteJobs, SQLiteValues):
    """The embedded store. ``url`` is ``sqlite:///path.db`` (relative), ``sqlite:////abs.db`` or a
    bare path; ``sqlite://:memory:`` keeps everything in memory (tests)."""

    def __init__(self, url: str, *, readers: int = 4) -> None:
        self.url = url
        path = _path_of(url)
        self._memory = path == ":memory:"
        if self._memory:
            # A named shared-cache in-memory database, so the reader threads see the writer's data.
            self._target = f"file:idnode-{uuid.uuid4().hex}?mode=memory&cache=shared"
        else:
            self._path = os.path.abspath(path)
            parent = os.path.dirname(self._path)
            if not os.path.isdir(parent):
                private_dir(parent)
            self._target = f"file:{self._path}"
        self._readers = readers
        self._local = threading.local()
        self._writer: ThreadPoolExecutor | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._keeper: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._write_lock = asyncio.Lock()

    # -- connections ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._target, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        if not self._memory:
            self._wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
        else:
            conn.execute("PRAGMA read_uncommitted = OFF")
        return conn

    @staticmethod
    def _wal(conn: sqlite3.Connection) -> None:
        """Switch the file to WAL once (it stays so). The switch takes an exclusive lock and does
        not wait on busy_timeout, so processes opening a new file together retry it."""
        deadline = time.monotonic() + 30
        while conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader_pool is None:
            raise StoreUnavailable("store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader_pool, lambda: fn(self._conn()))
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"store unavailable: {exc}") from None

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise StoreUnavailable("store is closed")
        loop = asyncio.get_running_loop()

        def run() -> T:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        try:
            return await loop.run_in_executor(self._writer, run)
        except sqlite3.IntegrityError as exc:
            raise InvalidRequest(f"conflicting data: {exc}") from None
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"store unavailable: {exc}") from None

    async def open(self) -> None:
        if self._memory:
            # Keeps the shared in-memory database alive while the store is open.
            self._keeper = self._connect()
            readers = 1  # shared-cache in-memory databases lock at table level: keep it simple
        else:
            readers = self._readers
            self._private_files()
            self._hold_shared_lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="idnode-sqlite-w")
        self._reader_pool = ThreadPoolExecutor(readers, thread_name_prefix="idnode-sqlite-r")
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise
        if not self._memory:
            self._private_files()  # the -wal and -shm files exist now

    def _hold_shared_lock(self) -> None:
        """A shared lock on ``<database>-lock`` for as long as the store is open: `idnode restore`
        takes it exclusively, so it never replaces a database a node or a command has open."""
        fd = os.open(self._path + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreInUse(f"the SQLite store {self._path} is being restored (idnode restore): try again") from None
        self._lock_fd = fd

    def _private_files(self) -> None:
        """A new database file is created 0600 before SQLite opens it (SQLite gives its -wal and
        -shm files the database file's mode); existing files are tightened."""
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
        for suffix in ("", "-wal", "-shm", "-journal", LOCK_SUFFIX):
            make_private(self._path + suffix)

    async def close(self) -> None:
        for pool in (self._writer, self._reader_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._writer = self._reader_pool = None
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _migrate(self) -> None:
        """Bring the schema up to SCHEMA_VERSION, one migration per transaction (forward only); a
        schema newer than this code knows is refused, never touched."""

        def run() -> None:
            conn = self._conn()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise schema_too_new(self._path if not self._memory else ":memory:", version, SCHEMA_VERSION)
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                try:
                    conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
                except sqlite3.OperationalError:
                    # Another store opening the same file at the same time may have applied it first
                    # (user_version was read before BEGIN IMMEDIATE).
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if conn.execute("PRAGMA user_version").fetchone()[0] < number:
                        raise

        assert self._writer is not None
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, run)
        except sqlite3.DatabaseError as exc:  # not a database, no permission, a disk error, …
            where = ":memory:" if self._memory else self._path
            raise StoreUnavailable(f"cannot open the SQLite store {where}: {exc}") from None

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    # -- handles -------------------------------------------------------------------------------
    @staticmethod
    def _row(row: tuple) -> StoredHandle:
        key, record, version, enterprise_id, created_at = row
        return StoredHandle(key, record, version, enterprise_id, created_at)

    async def get(self, key: str) -> StoredHandle | None:
        def run(c: sqlite3.Connection) -> StoredHandle | None:
            row = c.execute(
                "SELECT hkey, record, version, enterprise_id, created_at FROM handles WHERE hkey = ?", (key,)
            ).fetchone()
            return self._row(row) if row else None

        return await self._read(run)

    async def get_many(self, keys: Sequence[str]) -> dict[str, StoredHandle]:
        def run(c: sqlite3.Connection) -> dict[str, StoredHandle]:
            out: dict[str, StoredHandle] = {}
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                marks = ",".join("?" * len(chunk))
                for row in c.execute(
                    f"SELECT hkey, record, version, enterprise_id, created_at FROM handles WHERE hkey IN ({marks})",
                    chunk,
                ):
                    out[row[0]] = self._row(row)
            return out

        return await self._read(run)

    async def exists_many(self, keys: Sequence[str]) -> dict[str, int]:
        def run(c: sqlite3.Connection) -> dict[str, int]:
            return _existing(c, keys)

        return await self._read(run)

    async def current_version(self) -> int:
        return await self._read(
            lambda c: int(c.execute("SELECT value FROM meta WHERE key = 'write_seq'").fetchone()[0])
        )

    async def write(
        self, writes: Sequence[HandleWrite], *, now: int, atomic: bool = True, audit: AuditRecord | None = None
    ) -> list[WriteResult]:
        def run(c: sqlite3.Connection) -> list[WriteResult]:
            results = _apply(c, writes, now, atomic)
            if audit is not None and any(r.ok for r in results):
                insert_audit(c, audit)
            return results

        async with self._write_lock:
            return await self._write(run)

    async def list_handles(self, prefix: str, page: int, page_size: int) -> tuple[int, list[str]]:
        def run(c: sqlite3.Connection) -> tuple[int, list[str]]:
            buckets = c.execute(
                "SELECT bucket, n FROM list_buckets WHERE prefix = ? AND n > 0 ORDER BY bucket", (prefix,)
            ).fetchall()
            total = sum(n for _, n in buckets)
            if page_size <= 0:
                return total, []
            skip = page * page_size
            if skip >= total:
                return total, []
            start_bucket = None
            for bucket, n in buckets:
                if skip < n:
                    start_bucket = bucket
                    break
                skip -= n
            rows = c.execute(
                "SELECT record FROM handles WHERE prefix = ? AND id >= ? ORDER BY id LIMIT ? OFFSET ?",
                (prefix, start_bucket * LIST_BUCKET, page_size, skip),
            ).fetchall()
            return total, [_handle_of(r[0]) for r in rows]

        return await self._read(run)

    async def handles_from(
        self, prefix: str, limit: int, *, start: str | None = None, after: int = -1
    ) -> list[ListedHandle]:
        def run(c: sqlite3.Connection) -> list[ListedHandle]:
            rows = c.execute(
                "SELECT id, record FROM handles WHERE prefix = ? AND id > ? AND (? IS NULL OR id >= "
                "(SELECT id FROM handles WHERE hkey = ? AND prefix = ?)) ORDER BY id LIMIT ?",
                (prefix, after, start, start, prefix, max(0, limit)),
            ).fetchall()
            return [ListedHandle(r[0], _handle_of(r[1]), r[1]) for r in rows]

        return await self._read(run)

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
        sql = f"SELECT hkey, record FROM handles WHERE prefix = ? AND hkey {op} ?"
        args: list[object] = [prefix, low]
        if end is not None:
            sql += " AND hkey < ?"
            args.append(end)
        if before is not None:
            sql += " AND hkey < ? ORDER BY hkey DESC LIMIT ?"
            args += [before, max(0, limit)]
        else:
            sql += " ORDER BY hkey LIMIT ?"
            args.append(max(0, limit))
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        found = [(r[0], _handle_of(r[1])) for r in rows]
        return found[::-1] if before is not None else found

    # -- promoters and enterprises -------------------------------------------------------------
    async def add_promoter(self, name: str, uscc: str, *, now: int, audit: AuditRecord | None = None) -> Promoter:
        def run(c: sqlite3.Connection) -> Promoter:
            if c.execute("SELECT 1 FROM promoters WHERE uscc = ?", (uscc,)).fetchone():
                raise InvalidRequest(f"a promoter with credit code {uscc} already exists")
            cur = c.execute("INSERT INTO promoters (name, uscc, created_at) VALUES (?, ?, ?)", (name, uscc, now))
            insert_audit(c, audit)
            return Promoter(cur.lastrowid, name, uscc, now)

        async with self._write_lock:
            return await self._write(run)

    async def list_promoters(self) -> list[Promoter]:
        rows = await self._read(
            lambda c: c.execute("SELECT id, name, uscc, created_at FROM promoters ORDER BY id").fetchall()
        )
        return [Promoter(*r) for r in rows]

    async def get_promoter(self, ref: int | str) -> Promoter | None:
        col = "id" if isinstance(ref, int) else "uscc"
        row = await self._read(
            lambda c: c.execute(f"SELECT id, name, uscc, created_at FROM promoters WHERE {col} = ?", (ref,)).fetchone()
        )
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
        def run(c: sqlite3.Connection) -> Enterprise:
            if c.execute("SELECT 1 FROM enterprises WHERE uscc = ?", (uscc,)).fetchone():
                raise InvalidRequest(f"an enterprise with credit code {uscc} already exists")
            if c.execute("SELECT 1 FROM enterprises WHERE prefix_key = ?", (prefix.upper(),)).fetchone():
                raise InvalidRequest(f"prefix {prefix} is already allocated")
            cur = c.execute(
                "INSERT INTO enterprises (name, uscc, prefix, prefix_key, status, created_at) "
                "VALUES (?, ?, ?, ?, 'active', ?)",
                (name, uscc, prefix, prefix.upper(), now),
            )
            eid = cur.lastrowid
            c.execute(
                "INSERT INTO attributions (enterprise_id, promoter_id, effective_at) VALUES (?, ?, ?)",
                (eid, promoter_id, now),
            )
            (result,) = _apply(c, [prefix_write], now, True)
            if not result.ok:
                raise InvalidRequest(f"prefix handle 0.NA/{prefix} already exists")
            insert_audit(c, audit)
            return Enterprise(eid, name, uscc, prefix, "active", promoter_id, now)

        async with self._write_lock:
            return await self._write(run)

    _ENTERPRISE_SQL = (
        "SELECT e.id, e.name, e.uscc, e.prefix, e.status, "
        "(SELECT a.promoter_id FROM attributions a WHERE a.enterprise_id = e.id "
        " ORDER BY a.effective_at DESC, a.seq DESC LIMIT 1), e.created_at FROM enterprises e"
    )

    async def list_enterprises(self) -> list[Enterprise]:
        rows = await self._read(lambda c: c.execute(self._ENTERPRISE_SQL + " ORDER BY e.id").fetchall())
        return [Enterprise(*r) for r in rows]

    async def get_enterprise(self, ref: int | str) -> Enterprise | None:
        if isinstance(ref, int):
            where, args = " WHERE e.id = ?", (ref,)
        else:
            where, args = " WHERE e.prefix_key = ? OR e.uscc = ?", (ref.upper(), ref.upper())
        row = await self._read(lambda c: c.execute(self._ENTERPRISE_SQL + where, args).fetchone())
        return Enterprise(*row) if row else None

    async def enterprise_prefixes(self) -> list[str]:
        rows = await self._read(lambda c: c.execute("SELECT prefix FROM enterprises ORDER BY id").fetchall())
        return [r[0] for r in rows]

    async def move_enterprise(
        self, enterprise_id: int, promoter_id: int, *, effective_at: int, audit: AuditRecord | None = None
    ) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO attributions (enterprise_id, promoter_id, effective_at) VALUES (?, ?, ?)",
                (enterprise_id, promoter_id, effective_at),
            )
            insert_audit(c, audit)

        async with self._write_lock:
            await self._write(run)

    async def set_enterprise_status(self, enterprise_id: int, status: str, *, audit: AuditRecord | None = None) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute("UPDATE enterprises SET status = ? WHERE id = ?", (status, enterprise_id))
            insert_audit(c, audit)

        async with self._write_lock:
            await self._write(run)

    async def attributions(self) -> list[Attribution]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT enterprise_id, promoter_id, effective_at FROM attributions ORDER BY effective_at, seq"
            ).fetchall()
        )
        return [Attribution(*r) for r in rows]

    # -- GS1 company prefixes --------------------------------------------------------------------
    _GS1_SQL = (
        "SELECT g.company_prefix, g.enterprise_id, e.prefix, g.created_at "
        "FROM gs1_prefixes g JOIN enterprises e ON e.id = g.enterprise_id"
    )

    async def add_gs1_prefix(
        self, enterprise_id: int, company_prefix: str, *, now: int, limit: int
    ) -> tuple[Gs1Prefix, bool]:
        shorter = gs1_shorter(company_prefix)

        def run(c: sqlite3.Connection) -> tuple[Gs1Prefix, bool]:
            marks = ",".join("?" * len(shorter))
            rows = c.execute(
                f"{self._GS1_SQL} WHERE g.company_prefix IN ({marks}) "
                "OR (g.company_prefix > ? AND g.company_prefix < ?) ORDER BY g.company_prefix",
                (*shorter, company_prefix, company_prefix + ":"),
            ).fetchall()
            found = [Gs1Prefix(*r) for r in rows]
            gs1_check_conflicts(found, enterprise_id, company_prefix)
            same = next((p for p in found if p.company_prefix == company_prefix), None)
            if same is not None:
                return same, False
            (held,) = c.execute(
                "SELECT count(*) FROM gs1_prefixes WHERE enterprise_id = ?", (enterprise_id,)
            ).fetchone()
            gs1_check_limit(held, limit)
            c.execute(
                "INSERT INTO gs1_prefixes (company_prefix, enterprise_id, created_at) VALUES (?, ?, ?)",
                (company_prefix, enterprise_id, now),
            )
            (prefix,) = c.execute("SELECT prefix FROM enterprises WHERE id = ?", (enterprise_id,)).fetchone()
            return Gs1Prefix(company_prefix, enterprise_id, prefix, now), True

        async with self._write_lock:
            return await self._write(run)

    async def list_gs1_prefixes(self, enterprise_id: int | None = None) -> list[Gs1Prefix]:
        if enterprise_id is None:
            sql, args = self._GS1_SQL + " ORDER BY g.company_prefix", ()
        else:
            sql, args = self._GS1_SQL + " WHERE g.enterprise_id = ? ORDER BY g.company_prefix", (enterprise_id,)
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return [Gs1Prefix(*r) for r in rows]

    async def remove_gs1_prefix(self, enterprise_id: int, company_prefix: str) -> bool:
        async with self._write_lock:
            removed = await self._write(
                lambda c: (
                    c.execute(
                        "DELETE FROM gs1_prefixes WHERE company_prefix = ? AND enterprise_id = ?",
                        (company_prefix, enterprise_id),
                    ).rowcount
                )
            )
        return removed > 0

    async def find_gs1_prefix(self, candidates: Sequence[str]) -> Gs1Prefix | None:
        if not candidates:
            return None
        marks = ",".join("?" * len(candidates))
        sql = f"{self._GS1_SQL} WHERE g.company_prefix IN ({marks}) ORDER BY length(g.company_prefix) DESC LIMIT 1"
        row = await self._read(lambda c: c.execute(sql, tuple(candidates)).fetchone())
        return Gs1Prefix(*row) if row else None

    # -- counters ------------------------------------------------------------------------------
    async def registration_counts(self, from_day: int, to_day: int, before_hour: int) -> Mapping[int, int]:
        how = rollup.plan(from_day, to_day, before_hour)

        def run(c: sqlite3.Connection) -> list[tuple[int, int]]:
            rows: list[tuple[int, int]] = []
            if how.full_months is not None:
                first, end = how.full_months
                rows += c.execute(
                    "SELECT enterprise_id, SUM(delta) FROM registration_months "
                    "WHERE month >= ? AND month < ? AND change_month < ? GROUP BY enterprise_id",
                    (first, end, how.before_change_month),
                ).fetchall()
                if how.partial_hours is not None:
                    rows += c.execute(
                        # The planner, seeing a day range that covers the table, would scan it all.
                        "SELECT enterprise_id, SUM(delta) FROM registration_counts INDEXED BY registration_counts_hour "
                        "WHERE hour >= ? AND hour < ? AND day >= ? AND day < ? GROUP BY enterprise_id",
                        (*how.partial_hours, first * 100 + 1, end * 100 + 1),
                    ).fetchall()
            for a, b in how.edge_days:
                rows += c.execute(
                    "SELECT enterprise_id, SUM(delta) FROM registration_counts INDEXED BY registration_counts_day "
                    "WHERE day >= ? AND day < ? AND hour < ? GROUP BY enterprise_id",
                    (a, b, before_hour),
                ).fetchall()
            return rows

        out: dict[int, int] = {}
        for eid, n in await self._read(run):
            out[eid] = out.get(eid, 0) + int(n)
        return out

    # -- resolution statistics -------------------------------------------------------------------
    async def add_resolution_counts(self, batch: str, counts: Sequence[ResolutionCount], *, now: int) -> bool:
        rows = [(c.prefix, c.day, c.interface, c.found, c.not_found) for c in counts]

        def run(c: sqlite3.Connection) -> bool:
            added = c.execute(
                "INSERT INTO resolution_batches (batch, added_at) VALUES (?, ?) ON CONFLICT (batch) DO NOTHING",
                (batch, now),
            ).rowcount
            if not added:
                return False
            c.executemany(
                "INSERT INTO resolution_counts (prefix, day, interface, found, not_found) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (prefix, day, interface) DO UPDATE SET found = found + excluded.found, "
                "not_found = not_found + excluded.not_found",
                rows,
            )
            c.execute("DELETE FROM resolution_batches WHERE added_at < ?", (now - RESOLUTION_BATCH_DAYS * 86400,))
            return True

        async with self._write_lock:
            return await self._write(run)

    async def resolution_counts(self, from_day: int, to_day: int, prefix: str | None) -> list[ResolutionCount]:
        if prefix is None:
            sql = (
                "SELECT '', day, interface, SUM(found), SUM(not_found) FROM resolution_counts "
                "WHERE day >= ? AND day < ? GROUP BY day, interface ORDER BY day, interface"
            )
            args: tuple = (from_day, to_day)
        else:
            sql = (
                "SELECT prefix, day, interface, found, not_found FROM resolution_counts "
                "WHERE prefix = ? AND day >= ? AND day < ? ORDER BY day, interface"
            )
            args = (prefix, from_day, to_day)
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return [ResolutionCount(p, d, i, int(f), int(n)) for p, d, i, f, n in rows]

    async def resolution_prefix_totals(self, from_day: int, to_day: int) -> list[ResolutionCount]:
        sql = (
            "SELECT prefix, interface, SUM(found), SUM(not_found) FROM resolution_counts "
            "WHERE day >= ? AND day < ? GROUP BY prefix, interface ORDER BY prefix, interface"
        )
        rows = await self._read(lambda c: c.execute(sql, (from_day, to_day)).fetchall())
        return [ResolutionCount(p, 0, i, int(f), int(n)) for p, i, f, n in rows]

    async def registrations_by_day(self, enterprise_id: int, from_day: int, to_day: int) -> Mapping[int, int]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT day, SUM(delta) FROM registration_counts WHERE enterprise_id = ? AND day >= ? AND day < ? "
                "GROUP BY day",
                (enterprise_id, from_day, to_day),
            ).fetchall()
        )
        return {int(day): int(n) for day, n in rows}

    # -- console sessions ------------------------------------------------------------------------
    async def put_console_session(self, id_hash: str, identity: str, data: str, *, now: int, expires_at: int) -> None:
        async with self._write_lock:
            await self._write(
                lambda c: c.execute(
                    "INSERT INTO console_sessions (id_hash, identity, data, created_at, last_seen, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id_hash) DO UPDATE SET data = excluded.data, "
                    "last_seen = excluded.last_seen",
                    (id_hash, identity, data, now, now, expires_at),
                )
            )

    async def get_console_session(self, id_hash: str) -> ConsoleSession | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT identity, data, created_at, last_seen, expires_at FROM console_sessions WHERE id_hash = ?",
                (id_hash,),
            ).fetchone()
        )
        return ConsoleSession(*row) if row else None

    async def touch_console_session(self, id_hash: str, *, now: int) -> None:
        async with self._write_lock:
            await self._write(
                lambda c: c.execute("UPDATE console_sessions SET last_seen = ? WHERE id_hash = ?", (now, id_hash))
            )

    async def delete_console_session(self, id_hash: str) -> None:
        async with self._write_lock:
            await self._write(lambda c: c.execute("DELETE FROM console_sessions WHERE id_hash = ?", (id_hash,)))

    async def purge_console_sessions(self, *, now: int, idle_before: int) -> int:
        async with self._write_lock:
            return await self._write(
                lambda c: (
                    c.execute(
                        "DELETE FROM console_sessions WHERE expires_at <= ? OR last_seen < ?", (now, idle_before)
                    ).rowcount
                )
            )

    # -- metadata ------------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None:
        row = await self._read(lambda c: c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone())
        return row[0] if row else None

    async def add_meta(self, key: str, value: str) -> str:
        async with self._write_lock:
            return await self._write(lambda c: _add_meta(c, key, value))

    # -- templates and idempotency ---------------------------------------------------------------
    async def add_template(
        self, scope: str, template_id: str, version: int, body: str, *, now: int, audit: AuditRecord | None = None
    ) -> None:
        def run(c: sqlite3.Connection) -> None:
            if c.execute(
                "SELECT 1 FROM templates WHERE scope = ? AND id = ? AND version = ?", (scope, template_id, version)
            ).fetchone():
                raise InvalidRequest(f"template {template_id} version {version} already exists")
            c.execute(
                "INSERT INTO templates (scope, id, version, body, created_at) VALUES (?, ?, ?, ?, ?)",
                (scope, template_id, version, body, now),
            )
            insert_audit(c, audit)

        async with self._write_lock:
            await self._write(run)

    async def get_template(self, scope: str, template_id: str, version: int | None) -> tuple[int, str] | None:
        if version is None:
            sql = "SELECT version, body FROM templates WHERE scope = ? AND id = ? ORDER BY version DESC LIMIT 1"
            args: tuple = (scope, template_id)
        else:
            sql = "SELECT version, body FROM templates WHERE scope = ? AND id = ? AND version = ?"
            args = (scope, template_id, version)
        row = await self._read(lambda c: c.execute(sql, args).fetchone())
        return (row[0], row[1]) if row else None

    async def list_templates(self) -> list[tuple[str, str, int, str]]:
        rows = await self._read(
            lambda c: c.execute("SELECT scope, id, version, body FROM templates ORDER BY scope, id, version").fetchall()
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]

    async def get_idempotent(self, key: str) -> tuple[str, bytes] | None:
        row = await self._read(
            lambda c: c.execute("SELECT request_hash, response FROM idempotency WHERE key = ?", (key,)).fetchone()
        )
        return (row[0], bytes(row[1])) if row else None

    async def add_idempotent(self, key: str, request_hash: str, response: bytes, *, now: int) -> None:
        async with self._write_lock:
            await self._write(
                lambda c: c.execute(
                    "INSERT INTO idempotency (key, request_hash, response, created_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (key) DO NOTHING",
                    (key, request_hash, response, now),
                )
            )

    # -- audit log ------------------------------------------------------------------------------
    async def add_audit(self, at: int, actor: str, action: str, target: str, source: str, detail: str) -> int:
        def run(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO audit_log (at, actor, action, target, source, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (at, actor, action, target, source, detail),
            )
            return int(cur.lastrowid or 0)

        async with self._write_lock:
            return await self._write(run)

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
        where, args = audit_where(before_id, action, target, since, lambda n: "?", actor)
        sql = f"SELECT id, at, actor, action, target, source, detail FROM audit_log{where} ORDER BY id DESC LIMIT ?"
        rows = await self._read(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [AuditEntry(*r) for r in rows]

    async def set_meta(self, key: str, value: str, *, audit: AuditRecord | None = None) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
            insert_audit(c, audit)

        async with self._write_lock:
            await self._write(run)


def _add_meta(c: sqlite3.Connection, key: str, value: str) -> str:
    c.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))
    return c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]


def _handle_of(packed: bytes) -> str:
    return unpack_record(packed).handle


def _existing(c: sqlite3.Connection, keys: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(0, len(keys), 500):
        chunk = list(keys[i : i + 500])
        marks = ",".join("?" * len(chunk))
        out.update(c.execute(f"SELECT hkey, version FROM handles WHERE hkey IN ({marks})", chunk).fetchall())
    return out


def _apply(c: sqlite3.Connection, writes: Sequence[HandleWrite], now: int, atomic: bool) -> list[WriteResult]:
    """Apply ``writes`` inside the caller's transaction. Every expectation is checked before anything
    is written, so an atomic call with one failing item changes nothing."""
    keys = [w.key for w in writes]
    if len(set(keys)) != len(keys):
        raise InvalidRequest("the same handle appears more than once in one write")
    current = _existing(c, keys)
    results: list[WriteResult | None] = []
    for w in writes:
        have = current.get(w.key)
        if w.expect == MUST_NOT_EXIST and have is not None:
            results.append(WriteResult(WriteOutcome.EXISTS, have))
        elif have is None and (w.values is None or w.expect >= 0):
            results.append(WriteResult(WriteOutcome.MISSING))
        elif w.expect >= 0 and have != w.expect:
            results.append(WriteResult(WriteOutcome.STALE, have))
        else:
            results.append(None)
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo or (atomic and len(todo) != len(writes)):
        return [r or WriteResult(WriteOutcome.NOT_WRITTEN) for r in results]
    version = int(c.execute("UPDATE meta SET value = value + 1 WHERE key = 'write_seq' RETURNING value").fetchone()[0])
    day_now, hour_now = day_number(now), hour_of(now)
    written: list[int] = []  # handle ids, for the value index
    counts: dict[tuple[int, int], int] = {}
    buckets: dict[tuple[str, int], int] = {}
    inserts: list[tuple] = []
    for i in todo:
        w = writes[i]
        if w.values is None:
            hid, prefix, eid, created_at = c.execute(
                "DELETE FROM handles WHERE hkey = ? RETURNING id, prefix, enterprise_id, created_at", (w.key,)
            ).fetchone()
            written.append(hid)
            bk = (prefix, hid // LIST_BUCKET)
            buckets[bk] = buckets.get(bk, 0) - 1
            if eid is not None:
                ck = (eid, day_number(created_at))
                counts[ck] = counts.get(ck, 0) - 1
            results[i] = WriteResult(WriteOutcome.DELETED, version)
            continue
        packed = pack_record(Record(handle=w.handle, values=w.values, version=version))
        if w.key in current:
            (hid,) = c.execute(
                "UPDATE handles SET record = ?, version = ?, updated_at = ? WHERE hkey = ? RETURNING id",
                (packed, version, now, w.key),
            ).fetchone()
            written.append(hid)
            results[i] = WriteResult(WriteOutcome.REPLACED, version)
            continue
        inserts.append((w.key, w.prefix, w.enterprise_id, now, now, version, packed))
        results[i] = WriteResult(WriteOutcome.CREATED, version)
        if w.enterprise_id is not None:
            ck = (w.enterprise_id, day_now)
            counts[ck] = counts.get(ck, 0) + 1
    if inserts:
        first = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM handles").fetchone()[0]
        rows = [(first + n, *row) for n, row in enumerate(inserts)]
        c.executemany(
            "INSERT INTO handles (id, hkey, prefix, enterprise_id, created_at, updated_at, version, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        for row in rows:
            written.append(row[0])
            bk = (row[2], row[0] // LIST_BUCKET)
            buckets[bk] = buckets.get(bk, 0) + 1
    queue_for_index(c, written)
    if buckets:
        c.executemany(
            "INSERT INTO list_buckets (prefix, bucket, n) VALUES (?, ?, ?) "
            "ON CONFLICT (prefix, bucket) DO UPDATE SET n = n + excluded.n",
            [(p, b, n) for (p, b), n in buckets.items() if n],
        )
    if counts:
        c.executemany(
            "INSERT INTO registration_counts (enterprise_id, day, hour, delta) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (enterprise_id, day, hour) DO UPDATE SET delta = delta + excluded.delta",
            [(eid, day, hour_now, n) for (eid, day), n in counts.items() if n],
        )
        months: dict[tuple[int, int], int] = {}
        for (eid, day), n in counts.items():
            months[(day // 100, eid)] = months.get((day // 100, eid), 0) + n
        change = day_now // 100
        c.executemany(
            "INSERT INTO registration_months (month, change_month, enterprise_id, delta) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (enterprise_id, month, change_month) DO UPDATE SET delta = delta + excluded.delta",
            [(month, change, eid, n) for (month, eid), n in months.items() if n],
        )
    return [r for r in results if r is not None]  # every entry is filled by now
