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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from registry.errors import InvalidRequest, StoreInUse, StoreUnavailable
from registry.private_files import PRIVATE_FILE, make_private, private_dir
from registry.stores.base import CreateStream, schema_too_new
from registry.stores.sqlite_audit import SQLiteAudit
from registry.stores.sqlite_create_stream import SQLiteCreateStream
from registry.stores.sqlite_enterprises import SQLiteEnterprises
from registry.stores.sqlite_handle_reads import SQLiteHandleReads
from registry.stores.sqlite_handle_writes import SQLiteHandleWrites
from registry.stores.sqlite_jobs import JOBS_DDL, SQLiteJobs
from registry.stores.sqlite_meta import SQLiteMeta
from registry.stores.sqlite_sessions import SQLiteSessions
from registry.stores.sqlite_statistics import SQLiteStatistics
from registry.stores.sqlite_values import VALUES_DDL, SQLiteValues

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
    # 10: the audit log by actor (the console's and operators' "who did what" filter), newest first.
    "CREATE INDEX audit_log_actor ON audit_log (actor, id);",
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


class SQLiteStore(
    SQLiteHandleReads,
    SQLiteHandleWrites,
    SQLiteEnterprises,
    SQLiteStatistics,
    SQLiteSessions,
    SQLiteMeta,
    SQLiteAudit,
    SQLiteJobs,
    SQLiteValues,
):
    """The embedded store: connections, the schema and its migrations; each table family's methods
    come from a mixin (``sqlite_handle_reads``, ``sqlite_handle_writes``, ``sqlite_enterprises``, …).
    ``url`` is ``sqlite:///path.db`` (relative), ``sqlite:////abs.db`` or a
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

    async def create_stream(self, *, now: int, atomic: bool = True) -> CreateStream:
        """``registry.stores.base.HandleStore.create_stream``: see :mod:`registry.stores.sqlite_create_stream`."""
        stream = SQLiteCreateStream(self, now=now, atomic=atomic)
        await stream.open()
        return stream

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

    def _on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run ``fn`` on the writer thread's connection with no transaction of its own (a
        :class:`~registry.stores.sqlite_create_stream.SQLiteCreateStream` spans several calls);
        calls run in the order they were made."""
        if self._writer is None:
            raise StoreUnavailable("store is closed")
        return asyncio.get_running_loop().run_in_executor(self._writer, lambda: fn(self._conn()))

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
