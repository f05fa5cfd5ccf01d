"""Backups of the embedded SQLite store, and putting one back.

A backup is made with SQLite's online backup API in one step: it copies the pages of one read
transaction, so the copy is the database as of one instant (every write committed before it, none
after), while the node keeps writing (WAL: readers never block the writer). It is written to a
temporary file beside the destination, checked (``PRAGMA integrity_check``), synced and renamed into
place, so a backup file is whole or absent.

Restoring replaces the database of a stopped node: it takes the store's lock exclusively (every
process with the store open holds it shared, see :class:`registry.stores.sqlite.SQLiteStore`), so
it refuses while a node or a command uses the store. A database already there is kept beside it
(``<database>.before-restore-<time>``), consistently copied, before it is replaced.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from registry.errors import InvalidRequest, StoreInUse, StoreUnavailable
from registry.private_files import PRIVATE_FILE, private_dir
from registry.stores.base import schema_too_new
from registry.stores.sqlite import LOCK_SUFFIX, SCHEMA_VERSION

__all__ = ["BackupReport", "RestoreReport", "backup_database", "restore_database"]


@dataclass(frozen=True)
class BackupReport:
    path: str
    bytes: int
    schema_version: int
    handles: int
    write_version: int  # the store's write version at the instant copied (meta write_seq)


@dataclass(frozen=True)
class RestoreReport:
    path: str
    bytes: int
    schema_version: int  # of the backup, before the node upgrades it on opening
    handles: int
    write_version: int
    kept: str | None  # where the database that was there before now is


def _connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def _describe(conn: sqlite3.Connection, path: str) -> tuple[int, int, int]:
    """(schema version, handles, write version) of an idnode database; InvalidRequest otherwise."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version < 1 or not {"meta", "handles"} <= tables:
            raise InvalidRequest(f"{path} is not an idnode store")
        handles = conn.execute("SELECT COUNT(*) FROM handles").fetchone()[0]
        write_version = int(conn.execute("SELECT value FROM meta WHERE key = 'write_seq'").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise InvalidRequest(f"{path} is not an idnode store: {exc}") from None
    return version, handles, write_version


def _check(conn: sqlite3.Connection, path: str) -> None:
    problems = [r[0] for r in conn.execute("PRAGMA integrity_check(10)")]
    if problems != ["ok"]:
        raise InvalidRequest(f"{path} failed SQLite's integrity check: {'; '.join(problems)}")


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(source: sqlite3.Connection, target: Path) -> None:
    """``source`` as of one instant into ``target`` (written beside it, then renamed into place)."""
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    try:
        dest = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(dest)  # pages=-1: one step, one read transaction
            dest.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            _check(dest, str(target))
        finally:
            dest.close()
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, target)
        _sync_dir(target.parent)
    finally:
        partial.unlink(missing_ok=True)


def backup_database(database: str, destination: str, *, overwrite: bool = False) -> BackupReport:
    """Copy the store at ``database`` (a node may be writing to it) to the file ``destination``,
    or into the directory ``destination`` as ``idnode-<UTC time>.db``."""
    if not os.path.exists(database):
        raise StoreUnavailable(f"no SQLite store at {database}")
    target = Path(destination)
    if target.is_dir():
        target = target / f"idnode-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.db"
    if not target.parent.is_dir():
        raise InvalidRequest(f"no directory {target.parent} for the backup")
    if os.path.abspath(target) == os.path.abspath(database):
        raise InvalidRequest("the backup must not overwrite the store itself")
    if target.exists() and not overwrite:
        raise InvalidRequest(f"{target} exists (--force replaces it)")
    try:
        source = _connect(database)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open the SQLite store {database}: {exc}") from None
    try:
        _describe(source, database)
        _copy(source, target)
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(f"cannot read the SQLite store {database}: {exc}") from None
    finally:
        source.close()
    with contextlib.closing(_connect(str(target), readonly=True)) as copy:
        version, handles, write_version = _describe(copy, str(target))
    return BackupReport(str(target), target.stat().st_size, version, handles, write_version)


@contextlib.contextmanager
def _exclusive(database: Path) -> Iterator[None]:
    """The store's lock, exclusively: no node or command has the store open while it is held."""
    fd = os.open(str(database) + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreInUse(
                f"the SQLite store {database} is open in a running node or idnode command: stop it first"
            ) from None
        yield
    finally:
        os.close(fd)


def restore_database(backup: str, database: str, *, force: bool = False) -> RestoreReport:
    """Put the backup file ``backup`` in place of the (stopped) store at ``database``. A store
    already there is refused unless ``force``, and then kept beside it, not deleted."""
    if not os.path.isfile(backup):
        raise InvalidRequest(f"no backup file {backup}")
    try:
        source = _connect(backup, readonly=True)
    except sqlite3.Error as exc:
        raise InvalidRequest(f"cannot open {backup}: {exc}") from None
    try:
        version, handles, write_version = _describe(source, backup)
        if version > SCHEMA_VERSION:
            raise schema_too_new(backup, version, SCHEMA_VERSION)
        _check(source, backup)
        target = Path(os.path.abspath(database))
        if not target.parent.is_dir():
            private_dir(target.parent)
        with _exclusive(target):
            kept = None
            if target.exists() and target.stat().st_size > 0:
                if not force:
                    raise InvalidRequest(
                        f"{target} already holds a store: --force replaces it (it is kept beside it first)"
                    )
                kept = _set_aside(target)
            for suffix in ("-wal", "-shm", "-journal"):  # never let an old log meet the new file
                Path(str(target) + suffix).unlink(missing_ok=True)
            _copy(source, target)
    finally:
        source.close()
    return RestoreReport(str(target), target.stat().st_size, version, handles, write_version, kept)


def _set_aside(target: Path) -> str:
    """A consistent copy of the store about to be replaced (its WAL included), beside it."""
    aside = target.with_name(f"{target.name}.before-restore-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
    with contextlib.closing(_connect(str(target))) as current:
        _copy(current, aside)
    return str(aside)
