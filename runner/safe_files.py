"""Files that are never seen half written, and locks that two processes cannot hold at once.

`atomic_write` writes a file whole or not at all, however its process ends; `exclusive_lock` keeps
two processes from writing the same run or sweep. Neither needs torch, so the records written
through them can be read and analysed without it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

TEMPORARY_BYTES = 8  # random bytes in the name of an atomic write's temporary file, written as hex


def atomic_write(path: str | Path, write: Callable) -> None:
    """Write a file through `write(binary_file)` into a temporary sibling, then rename it over `path`.

    A crash, Ctrl-C or power loss at any moment leaves either the old file or the new one, never a
    partial file: the data are flushed to disk before the rename, and the rename itself after it.
    The file gets the permissions the user's umask gives any new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(TEMPORARY_BYTES)}.tmp")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def remove_stale_temporaries(path: str | Path) -> None:
    """Remove the temporary files that `atomic_write` of `path` left behind when its process was
    killed mid-write (by SIGKILL, say, at a cluster's time limit).

    Call it only while holding the lock of `path`: then no other process is writing it. The names
    matched are those of `path`'s temporary files only, never another file's.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{{2 * TEMPORARY_BYTES}}}\.tmp")
    if not path.parent.is_dir():
        return
    for entry in path.parent.iterdir():
        if pattern.fullmatch(entry.name):
            entry.unlink(missing_ok=True)


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the file system can: some (network
    file systems among them) refuse to sync a folder, and the file itself is on disk already."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(handle)


class LockHeld(Exception):
    """Another process holds the lock; its message names that process."""


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock file `path` for the duration of the block, or raise LockHeld at once.

    The operating system releases the lock when its process ends, however it ends, so a file left
    behind by a killed process is stale and simply taken over. The file holds the holder's process
    id and is removed on release, with the folders made for it if they stayed empty.
    """
    path = Path(path)
    made = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise LockHeld(f"process {holder} holds {path}") from None
        if same_file(handle, path):
            break
        handle.close()  # the holder removed the file as we opened it: lock the new one
    try:
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()
        remove_if_empty(made)


def remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders, innermost first, as long as they are empty: those made only to hold a lock
    file leave no trace when nothing else was written into them."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def same_file(handle, path: Path) -> bool:
    """Whether the open file `handle` is still the file at `path`."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False
