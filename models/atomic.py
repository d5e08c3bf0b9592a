"""Files that are either absent or whole: atomic writes, per-key locks that leave nothing behind, content
hashes, and the sweep of temporary files a killed write left."""
from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional

UMASK = os.umask(0o022)
os.umask(UMASK)  # read once: the process's umask, restored at once

TMP_SUFFIX = ".tmp"
# A temporary file older than this cannot belong to a live write: the largest, a 10,000-noise golden file
# (12 MiB), is compressed and written in about 0.4 s (measured on 2 cores); so a sweep may remove it.
STALE_SECONDS = 600


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(f) on a temporary file beside `path`, then rename it over `path`. The data reach the disk
    before the rename and the rename before the return (fsync of the file, then of its folder), so that after a
    power cut `path` holds the old file or the whole new one, never an empty or partial one; this costs about
    0.3 ms a file on this project's CI disk (measured, 100 kB files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # as open() would create it, not mkstemp's owner-only 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def touch(path: str | os.PathLike) -> None:
    """Set a cache entry's modification time to now, marking it used (`models.store.prune`); a cache the process
    may not write to (read-only, another owner's) keeps its times."""
    try:
        os.utime(path)
    except OSError:
        pass


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new entry in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename itself has happened
        pass
    finally:
        os.close(fd)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock between processes, held on the file `path`, which is removed on release so that lock
    files do not pile up. A waiter that wakes on a file already removed (and perhaps recreated by a third
    process) retries on the current one, so two holders never overlap."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                try:
                    yield
                finally:
                    os.unlink(path)
                return
        finally:
            os.close(fd)  # closing releases the lock


def _remove_unheld(path: Path) -> bool:
    """Remove a lock file that no process holds, as its holder would on release (a waiter that then wakes on the
    removed file retries on the current one: file_lock); a held lock is left alone."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:  # removed meanwhile, or not ours to open
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by a running process
            return False
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return False
        except FileNotFoundError:
            return False
        os.unlink(path)
        return True
    finally:
        os.close(fd)


_OWN_TMP = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(TMP_SUFFIX))  # tempfile's 8 random characters


def sweep_stale(root: str | os.PathLike, older_than: float = STALE_SECONDS, of: Optional[str] = None) -> list[Path]:
    """Remove the temporary files and folders (`.<name>.<random>.tmp`) that writes killed mid-way left under
    `root`, and the lock files (`locks/*.lock`) that no process holds any more, or only the temporary files of the
    file named `of` directly in `root` (a folder that is not the suite's, e.g. a golden file's); return what was
    removed."""
    root, removed = Path(root), []
    if not root.is_dir():
        return removed
    cutoff = time.time() - older_than
    if of is None:  # the lock files of processes killed while holding them (file_lock removes its file on release)
        for p in root.rglob("locks/*.lock"):
            try:
                if p.lstat().st_mtime < cutoff and _remove_unheld(p):
                    removed.append(p)
            except FileNotFoundError:
                continue
    for p in (root.glob(f".{glob.escape(of)}.*{TMP_SUFFIX}") if of else root.rglob(f".*{TMP_SUFFIX}")):
        if not _OWN_TMP.fullmatch(p.name):  # only names of tempfile's making, not any hidden .tmp of the user's
            continue
        try:
            if p.lstat().st_mtime >= cutoff:
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
        except FileNotFoundError:  # removed by a concurrent sweep
            continue
    return removed
