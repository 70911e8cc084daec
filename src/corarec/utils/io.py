"""Atomic writes: every artefact (JSON, tensors, tables, directories) is written to a temporary sibling, then
renamed into place.

An interrupted run therefore never leaves a half-written file or directory behind. What a kill can
leave is only hidden siblings, and both are dealt with on the next read or write of the same path:

- ``.NAME.<pid>-<host>.<random>.tmp``: a temporary of a writer that died before its rename. It is
  removed (:func:`clean_stale_temporaries`) once that writer's process is gone; nothing of another
  name or pattern, and no temporary of a live process, is ever touched.
- ``.NAME.old``: a directory swap (:func:`atomic_dir`) killed between its two renames leaves the
  previous, complete ``NAME`` here and no ``NAME``; :func:`recover_dir` renames it back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from corarec.errors import CorarecError


_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
"""This host in temporaries' names (with the pid): a temporary of another host is never removed."""
_TEMPORARY = re.compile(r"(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.[a-z0-9_]+\.tmp")
"""What follows ``.NAME.`` in a temporary's name (the random part is tempfile's alphabet)."""
_SWAP_ATTEMPTS = 3


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_writer()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file owner-only, and a writer may create it anew (safetensors does, 0600):
        # the finished file gets the usual mode
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path``.

    The swap is two renames (``path`` → ``.NAME.old``, temporary → ``path``), then ``.NAME.old``
    is removed; a kill between the renames is undone by :func:`recover_dir`, which runs first here.
    """
    path = Path(path)
    recover_dir(path)
    if path.exists() and not overwrite:
        raise CorarecError(f"{path} already exists (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_writer()}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only; a finished directory gets the usual mode
    try:
        yield tmp
        _swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``, moving an existing ``path`` to ``.NAME.old`` first, then drop that.

    A reader's :func:`recover_dir` may put ``.NAME.old`` back between the two renames (it sees no
    ``path``); the second rename then fails on the restored directory and the swap is simply redone.
    """
    old = old_dir(path)
    for _ in range(_SWAP_ATTEMPTS):
        if os.path.lexists(path):
            _discard_old(path)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if os.path.lexists(path):
                continue
            raise
        _discard_old(path)
        return
    raise CorarecError(f"{path}: could not replace it ({_SWAP_ATTEMPTS} attempts; is another process rewriting it?)")


def old_dir(path: str | Path) -> Path:
    """Where :func:`atomic_dir` keeps the previous ``path`` during a swap: ``.NAME.old`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


def recover_dir(path: str | Path) -> bool:
    """Undo an interrupted directory swap, and drop dead writers' temporaries of ``path``.

    When ``path`` is missing and ``.NAME.old`` is a directory, a swap was killed between its renames:
    ``.NAME.old`` is the last complete state and is renamed back to ``path``. Returns whether it was.
    Call it before reading a directory that :func:`atomic_dir` writes.
    """
    path = Path(path)
    clean_stale_temporaries(path)
    old = old_dir(path)
    if os.path.lexists(path) or old.is_symlink() or not old.is_dir():
        return False
    try:
        os.rename(old, path)
    except OSError:  # another process recovered it, or a writer finished its swap meanwhile
        if os.path.lexists(path):
            return False
        raise
    return True


def _discard_old(path: Path) -> None:
    """Remove ``.NAME.old`` of ``path`` if present. It is first renamed to a temporary of this process,
    so a kill halfway through the removal leaves a dead writer's temporary, never a partial ``.old``."""
    old = old_dir(path)
    if not os.path.lexists(old):
        return
    if old.is_symlink():
        old.unlink()  # the link only, never what it points to
        return
    if not old.is_dir():
        raise CorarecError(f"{old}: a file is in the way of the directory swap; move it elsewhere")
    trash = path.with_name(f".{path.name}.{_writer()}.{secrets.token_hex(4)}.tmp")
    os.replace(old, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries ``.NAME.<pid>-<host>.<random>.tmp`` of ``path`` whose writer is dead.

    Only names of exactly that pattern are considered, only those written on this host, and only when
    no process with that pid runs (a reused pid keeps the temporary, which is the safe side). A link is
    removed as a link, never followed. Returns what was removed.
    """
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name[len(prefix):]) if entry.name.startswith(prefix) else None
        if match is None or match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:  # removed by another cleaner meanwhile, or not ours to remove: left as it is
            continue
        removed.append(Path(entry.path))
    return removed


def _writer() -> str:
    """This process's id in its temporaries' names: ``<pid>-<host>``."""
    return f"{os.getpid()}-{_HOST}"


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (unknown counts as alive: nothing is removed)."""
    if os.name != "posix" or pid <= 0:
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, as another user's process
        return True
    return True


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (changing it races with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise CorarecError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CorarecError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise CorarecError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); JSON files must be UTF-8") from None


TABLE_SUFFIXES = (".csv", ".parquet")
"""The table files :func:`write_table` writes."""


def write_table(path: str | Path, table: pd.DataFrame) -> None:
    """Write ``table`` without its index to a ``.csv`` or ``.parquet`` file (by the suffix), atomically."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise CorarecError(f"{path}: a table is written as a .csv or .parquet file")
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save a flat dict of tensors as safetensors, atomically (never pickles)."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=metadata)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise CorarecError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CorarecError(f"{path}: not a readable safetensors file ({e})") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
