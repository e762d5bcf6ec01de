"""Files written whole or not at all: every output of fastloss goes through `atomic_output`.

The content is written to a temporary file beside the target, synced, then linked into
place (renamed, when replacing is allowed), so a crash never leaves a partial file and an
existing file is never clobbered unless the caller asks for it. A killed writer may leave
its temporary file behind; `remove_stale_temporaries` deletes those.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
import uuid
from collections.abc import Iterator

from fastloss.errors import FastlossError, NotFoundError, OutputExistsError, OutputWriteError

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def check_output_path(path: str | os.PathLike, overwrite: bool) -> None:
    """Fail before any work when ``path`` cannot be written: its folder is missing or
    read-only, or it exists and ``overwrite`` is False."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise NotFoundError(
            f"folder {folder} does not exist; create it or choose another output path"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputWriteError(
            f"folder {folder} is not writable; choose another output path or fix its permissions"
        )
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite=True to replace it")


@contextlib.contextmanager
def write_errors(path: str | os.PathLike, note: str = "") -> Iterator[None]:
    """Raise an ``OSError`` of the block that the user can fix (a full disk, no permission)
    as `OutputWriteError` naming ``path``, with ``note`` after the advice."""
    try:
        yield
    except OSError as e:
        if isinstance(e, FastlossError):
            raise
        text = str(e)
        if e.errno in _FULL or "No space left on device" in text or "errno = 28" in text:
            problem, fix = "the disk is full", "free some space or choose another output folder"
        elif e.errno in _DENIED or "Permission denied" in text or "Read-only file system" in text:
            problem, fix = "permission denied", "choose another folder or fix its permissions"
        else:
            raise
        raise OutputWriteError(f"cannot write {os.fspath(path)}: {problem}; {fix}{note}") from e


def temporary_path(path: str, keep_suffix: bool = False) -> str:
    """``.<name>.<12 hex digits>.tmp`` beside ``path``, and ``path``'s suffix after it with
    ``keep_suffix`` (for writers that choose the format by it)."""
    folder, name = os.path.split(os.path.abspath(path))
    suffix = os.path.splitext(name)[1] if keep_suffix else ""
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, overwrite: bool = False, keep_suffix: bool = False
) -> Iterator[str]:
    """Yields a temporary path (`temporary_path`) to write ``path``'s content to; when the
    block ends without an error, that file is synced and moved to ``path``. Without
    ``overwrite`` an existing ``path`` (also one that appears meanwhile) raises
    `OutputExistsError`."""
    path = os.fspath(path)
    check_output_path(path, overwrite)
    tmp = temporary_path(path, keep_suffix)
    try:
        with write_errors(path):
            yield tmp
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:  # link fails if the path appeared meanwhile, where replace would clobber it
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExistsError(
                    f"{path} exists; pass overwrite=True to replace it"
                ) from None
            except OSError:  # filesystems without hard links
                if os.path.exists(path):
                    raise OutputExistsError(
                        f"{path} exists; pass overwrite=True to replace it"
                    ) from None
                os.replace(tmp, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported on every platform/filesystem; the rename itself is atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(path: str | os.PathLike, min_age_s: float = 60.0) -> None:
    """Delete temporary files that an `atomic_output` of ``path`` left when its process was
    killed: named like ours, older than ``min_age_s`` and not locked (HDF5 holds an flock on
    a file it is writing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: leave them
        return
    folder, base = os.path.split(os.path.abspath(os.fspath(path)))
    suffix = re.escape(os.path.splitext(base)[1])
    pattern = re.compile(re.escape(f".{base}.") + rf"[0-9a-f]{{12}}\.tmp({suffix})?")
    now = time.time()
    try:
        names = os.listdir(folder)
    except OSError:  # no folder (the writer says so) or not readable: nothing of ours there
        return
    for name in names:
        if not pattern.fullmatch(name):
            continue
        tmp = os.path.join(folder, name)
        try:
            if now - os.stat(tmp).st_mtime < min_age_s:
                continue
            fd = os.open(tmp, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(tmp)
            finally:
                os.close(fd)
        except OSError:
            continue  # locked or gone: someone else's business
