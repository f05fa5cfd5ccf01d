"""Files only the node's user may read: its data directory (0700), the SQLite store with its -wal
and -shm files, and the report-signing key (0600).

Modes are set when the node creates a file or directory and tightened when it finds one that other
users can read (an older version, a restored backup, a umask of 022). Where that is not possible
(another owner, a read-only mount) the node says so in a warning and carries on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "create_private_file", "make_private", "private_dir"]

log = logging.getLogger("idnode.files")
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_OTHERS = 0o077  # group and world bits


def make_private(path: str | os.PathLike[str]) -> bool:
    """Drop the group and world bits of an existing file or directory (its owner's bits stay).
    False, with a warning, when it stays readable by others; True when it is private or absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    mode = stat.S_IMODE(st.st_mode)
    if not mode & _OTHERS:
        return True
    try:
        os.chmod(path, mode & ~_OTHERS)
    except OSError as exc:
        log.warning(
            "%s is open to other users (mode %03o) and could not be made private: %s; "
            "make it owned by the node's user and mode %03o",
            os.fspath(path),
            mode,
            exc.strerror or exc,
            PRIVATE_DIR if stat.S_ISDIR(st.st_mode) else PRIVATE_FILE,
        )
        return False
    return True


def private_dir(path: str | os.PathLike[str]) -> None:
    """Create the directory ``path`` (with its parents) as 0700, or make an existing one private."""
    try:
        os.mkdir(path, PRIVATE_DIR)
    except FileExistsError:
        make_private(path)
        return
    except FileNotFoundError:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)  # the umask may have taken bits away; never adds group or world ones


def create_private_file(path: str | os.PathLike[str], data: bytes) -> bool:
    """Write ``data`` to a new file ``path`` of mode 0600, whole or not at all; False (and the file
    left as it is) when it exists already, e.g. because another process created it first."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        private_dir(parent)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".idnode-")  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if the file exists: readers never see half a file
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)
