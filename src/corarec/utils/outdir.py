"""Output directories: what a command may replace, and one writer per run directory at a time.

- :func:`check_replaceable` is called before a command replaces its ``--out`` directory whole
  (``prepare``, ``train-cf``): an absent or empty directory is fine; a directory that holds the
  command's own kind of output (and nothing else) is replaced only with ``overwrite``; anything
  else is an error and nothing is touched.
- :func:`run_lock` keeps a second process out of a run directory while one writes it
  (``corarec train``): an exclusive ``flock`` on ``<dir>/.lock``, released by the kernel when the
  holder exits, however it exits, so a killed training never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from corarec.errors import CorarecError
from corarec.utils.io import recover_dir

LOCK = ".lock"
"""Name of the lock file inside a run directory (present only while a process holds it)."""


def check_replaceable(path: str | Path, kind: str, is_kind: Callable[[Path], bool],
                      artefacts: Collection[str], overwrite: bool) -> None:
    """Raise unless writing a ``kind`` to ``path`` destroys nothing the user did not ask to replace.

    ``is_kind(path)`` recognises a directory written by the same command; ``artefacts`` are the only
    names such a directory holds. A non-empty directory is replaced only when it is a ``kind``, holds
    nothing but ``artefacts`` and ``overwrite`` is set.
    """
    path = Path(path)
    recover_dir(path)  # a kill between the two renames of an earlier swap: judge the restored state
    if not path.exists():
        return
    if not path.is_dir():
        raise CorarecError(f"{path}: exists and is not a directory; choose another --out")
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return
    if not is_kind(path):
        raise CorarecError(f"{path}: exists, is not empty and is not a {kind}, so it is never replaced; "
                           "choose another --out")
    others = [name for name in names if name not in artefacts]
    if others:
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise CorarecError(f"{path}: holds a {kind} and other files ({listed}) that replacing it would delete; "
                           "move them away or choose another --out")
    if not overwrite:
        raise CorarecError(f"{path}: already holds a {kind}; pass --overwrite to replace it, or choose another --out")


def inside(path: str | Path, directory: str | Path) -> bool:
    """Whether ``path`` is ``directory`` or lies under it (symbolic links resolved)."""
    resolved, root = Path(path).resolve(), Path(directory).resolve()
    return resolved == root or root in resolved.parents


@contextmanager
def run_lock(directory: str | Path, what: str = "corarec train") -> Iterator[None]:
    """Hold the exclusive lock of ``directory`` (created if missing) for the ``with`` block.

    A second process gets a one-line :class:`CorarecError` naming the holder's pid. On exit the lock
    file is removed, and so is ``directory`` itself when this call created it and nothing was written.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CorarecError(f"{directory}: exists and is not a directory; choose another --out")
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    fd = _acquire(path, directory, what)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        try:
            path.unlink()  # while still holding the lock: the next process opens a fresh file
        except FileNotFoundError:
            pass
        os.close(fd)
        if created:
            try:
                directory.rmdir()  # only succeeds when nothing was written: no stray empty folder
            except OSError:
                pass


def _acquire(path: Path, directory: Path, what: str) -> int:
    """Open and lock ``path``; retry when the previous holder removed the file we opened."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = _holder(path)
            raise CorarecError(f"{directory}: another {what}{holder} is writing this run directory; "
                               "wait for it to finish or choose another --out") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a file its holder had just removed; the live lock file is another one


def _holder(path: Path) -> str:
    """`` (pid N)`` from the lock file, or nothing when it cannot be read yet."""
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
