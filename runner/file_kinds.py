"""What kind of thing a path names, so that the data layer reads regular files only: opening a FIFO
blocks until some other process writes to it, and a device or socket may never end."""
from __future__ import annotations

import stat
from pathlib import Path

KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def irregular_kind(path: Path) -> str | None:
    """What `path` is where it exists but is not a regular file (after following links), such as
    "a FIFO (named pipe)"; None for a regular file and for a path that does not exist."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return next((kind for is_kind, kind in KINDS if is_kind(mode)), "not a regular file")
