"""Files that are never seen half written, and locks that two processes cannot hold at once.

`atomic_write` writes a file whole or not at all, however its process ends; `written_together`
writes several files and replaces their old versions only once all are on disk; `exclusive_lock`
keeps two processes from writing the same run or sweep. A file that cannot be written raises
`UnwritableFile`, whose message is one line. None of it needs torch, so the records written
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
from typing import Callable, Iterator, TextIO

TEMPORARY_BYTES = 8  # random bytes in the name of an atomic write's temporary file, written as hex


class UnwritableFile(OSError):
    """A file could not be written; its message is one line naming the file and the cause."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def unwritable(path: Path, error: OSError) -> UnwritableFile:
    """The failure to write `path` as one line: the folder that is not one, or the system's cause
    (no space left, a read-only file system, a name too long, permission denied)."""
    if isinstance(error, UnwritableFile):
        return error
    folder = next((folder for folder in reversed(path.parents) if folder.exists() and not folder.is_dir()), None)
    cause = f"{folder} is a file, not a folder" if folder else error.strerror or str(error)
    if error.errno == errno.ENAMETOOLONG and error.filename:
        name = Path(error.filename).name  # the temporary file's, written first, or the path's own
        cause += f" ({name} has {len(name)} characters)"
    return UnwritableFile(error.errno, cause, str(path))


def atomic_write(path: str | Path, write: Callable) -> None:
    """Write a file through `write(binary_file)` into a temporary sibling, then rename it over `path`.

    A crash, Ctrl-C or power loss at any moment leaves either the old file or the new one, never a
    partial file: the data are flushed to disk before the rename, and the rename itself after it.
    The file gets the permissions the user's umask gives any new file. Raises UnwritableFile.
    """
    path = Path(path)
    promote(staged_write(path, write), path)


def staged_write(path: str | Path, write: Callable) -> Path:
    """Write the new content of `path` through `write(binary_file)` into a temporary sibling, flushed
    to disk, and return that temporary file: `promote` puts it in place, which lets several files
    be written first and then replace their old versions together. Raises UnwritableFile, leaving no
    temporary file behind."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(TEMPORARY_BYTES)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:
        raise unwritable(path, error) from None
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise unwritable(path, error) from None
        raise
    return temporary


def check_writable(path: str | Path) -> None:
    """Make and remove the temporary file that `atomic_write` of `path` makes first: raises
    UnwritableFile where it could not be written (a name too long for the file system, a read-only
    or missing folder), before any work is spent on its content."""
    staged_write(path, lambda f: None).unlink()


def promote(temporary: Path, path: str | Path) -> None:
    """Rename a temporary file of `staged_write` over `path`, and flush the rename to disk."""
    path = Path(path)
    try:
        os.replace(temporary, path)
        sync_folder(path.parent)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise unwritable(path, error) from None


@contextmanager
def written_together() -> Iterator[StagedFiles]:
    """Files staged in the block (`StagedFiles.write`) replace their old versions only when it calls
    `StagedFiles.promote`; where it ends before that, their temporary files are removed and the old
    versions stay as they were."""
    staged = StagedFiles()
    try:
        yield staged
    finally:
        staged.discard()


class StagedFiles:
    """New versions of files, written and flushed to disk beside the old ones (see `written_together`)."""

    def __init__(self) -> None:
        self.files: dict[Path, Path] = {}  # temporary file by the file it replaces

    def write(self, path: str | Path, content: bytes) -> None:
        """Write `content` as the new version of `path`, beside the old one."""
        self.files[Path(path)] = staged_write(path, lambda f: f.write(content))

    def promote(self) -> None:
        """Put every staged file in place, in the order they were staged."""
        while self.files:
            path, temporary = next(iter(self.files.items()))
            del self.files[path]
            promote(temporary, path)

    def discard(self) -> None:
        """Remove the new versions not yet put in place."""
        for temporary in self.files.values():
            temporary.unlink(missing_ok=True)
        self.files.clear()


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
    while True:
        try:
            handle = open_lock_file(path)
        except UnwritableFile:
            remove_if_empty(made)
            raise
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
        write_holder(handle, path)
        yield
    finally:
        release(handle, path)
        remove_if_empty(made)


def lock_holder(path: str | Path) -> str | None:
    """The process id in the lock file `path` while a process holds it; None where none does. The
    file is only looked at: neither made nor taken."""
    try:
        handle = open(path)
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def open_lock_file(path: Path) -> TextIO:
    """The lock file at `path`, opened for appending (made with its folders where missing)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a+")
    except OSError as error:
        raise unwritable(path, error) from None


def write_holder(handle: TextIO, path: Path) -> None:
    """Put this process's id into the held lock file, for the message of a process that finds it held."""
    try:
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    except OSError as error:
        raise unwritable(path, error) from None


def release(handle: TextIO, path: Path) -> None:
    """Remove the lock file and release the lock. A file that cannot be removed (its folder has
    become read-only) stays behind, released: the next process takes it over as stale."""
    for finish in (lambda: path.unlink(missing_ok=True), handle.close):
        try:
            finish()
        except OSError:
            pass


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
