"""Size cap of the prefix cache: the least recently used shards go first, across the whole cache root.

The cap covers every cache directory under the root (every LLM, template and layer): the bytes of
their shard files. Before a :class:`~corarec.llm.prefix_cache.PrefixCache` writes a shard it makes
room (:func:`make_room`): shards are deleted oldest first by modification time, which a cache
refreshes on the shards it reads (at most every :data:`TOUCH_EVERY_S`), so that time is their last
use. A cache never deletes the shards it has itself read or written: they are what its run reads
again (next epoch, next validation); another cache object, in this process or another, may. When only those are left and a new shard still does not fit,
the shard is not written, the run is told once, and its remaining rows are computed at every pass.

What may be deleted: only a file named ``shard-<digits>-<digits>.safetensors`` directly inside a
directory of the root named like a cache directory (``<template>-L<layer>-<16 hex digits>``, not a
link) that holds a ``key.json``, and whose safetensors header records that same key — nothing else
under the root, and nothing outside it. Dead writers' temporaries of such shards are removed too
(:func:`corarec.utils.io.clean_stale_temporaries`).

Several processes may share a root. A deletion is one ``unlink`` of a complete file (shards are
written atomically and never changed); a file another process deleted first is skipped; a reader
that finds one of its shards gone recomputes those rows. Two writers making room at the same time
may each add a shard, so the cap can be passed by one shard per concurrent writer. The disk space
of a deleted shard that another running process still has open returns when that process ends.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

from safetensors import SafetensorError, safe_open

from corarec.errors import CorarecError
from corarec.utils.io import clean_stale_temporaries

DEFAULT_MAX_GB = 15.0
"""Default cap: MovieLens-100K's whole train split (66,994 rows, 159 tokens a row on average: 12.3 GB
in bf16 on SmolLM2) plus a benchmark's 4,000 validation and 4,000 test rows (1.5 GB), with room to spare."""
MAX_GB_ENV = "CORAREC_PREFIX_CACHE_MAX_GB"
"""Environment variable that sets the cap where the method's ``prefix_cache_max_gb`` is not given."""
TOUCH_EVERY_S = 60.0
"""A shard in use gets its modification time refreshed at most this often (its place in the LRU order)."""

_SHARD = re.compile(r"shard-\d+-\d+\.safetensors")
_SHARD_TEMPORARY = re.compile(r"\.(shard-\d+-\d+\.safetensors)\..+\.tmp")
_CACHE_DIR = re.compile(r".+-L\d+-[0-9a-f]{16}")
KEY_FILE = "key.json"


def max_bytes(max_gb: float | None) -> int:
    """The cap in bytes: ``max_gb`` GB (10⁹ bytes), else ``$CORAREC_PREFIX_CACHE_MAX_GB``, else 15 GB."""
    if max_gb is None:
        text = os.environ.get(MAX_GB_ENV, "").strip()
        if not text:
            return int(DEFAULT_MAX_GB * 1e9)
        try:
            max_gb = float(text)
        except ValueError:
            max_gb = math.nan
        if not (math.isfinite(max_gb) and max_gb > 0):
            raise CorarecError(f"${MAX_GB_ENV} must be a number of GB greater than 0, got {text!r}")
    return int(max_gb * 1e9)


@dataclass(frozen=True)
class ShardFile:
    """One shard on disk as listed: its path, size in bytes and modification time (last use)."""

    path: Path
    size: int
    mtime: float


def cache_shards(root: Path) -> list[ShardFile]:
    """Every shard under ``root`` that the cap counts (see the module docstring for which); a file that
    vanishes while listed is left out. Dead writers' temporaries of shards are removed on the way."""
    found: list[ShardFile] = []
    try:
        folders = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for folder in folders:
        if not (_CACHE_DIR.fullmatch(folder.name) and folder.is_dir(follow_symlinks=False)
                and os.path.isfile(os.path.join(folder.path, KEY_FILE))):
            continue
        try:
            entries = list(os.scandir(folder.path))
        except OSError:  # removed or unreadable meanwhile
            continue
        for entry in entries:
            temporary = _SHARD_TEMPORARY.fullmatch(entry.name)
            if temporary:
                clean_stale_temporaries(Path(folder.path) / temporary[1])
                continue
            if not _SHARD.fullmatch(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted by another process since the listing
                continue
            found.append(ShardFile(Path(entry.path), stat.st_size, stat.st_mtime))
    return found


def is_cache_shard(path: Path) -> bool:
    """Whether ``path``'s safetensors header records the key in ``key.json`` of the directory it lies in."""
    try:
        key = json.loads((path.parent / KEY_FILE).read_text())
        with safe_open(str(path), framework="pt") as handle:
            recorded = (handle.metadata() or {}).get("key")
        return recorded is not None and json.loads(recorded) == key
    except (OSError, ValueError, SafetensorError):
        return False


def make_room(root: Path, need: int, cap: int, keep: Collection[Path]) -> tuple[bool, list[Path]]:
    """Delete the least recently used shards under ``root``, never one in ``keep``, until ``need`` more
    bytes fit under ``cap`` bytes. Returns whether they fit now, and the shards deleted."""
    shards = cache_shards(root)
    total = sum(shard.size for shard in shards)
    deleted: list[Path] = []
    for shard in sorted((s for s in shards if s.path not in keep), key=lambda s: s.mtime):
        if total + need <= cap:
            break
        if not is_cache_shard(shard.path):
            if not os.path.lexists(shard.path):  # deleted by another process since the listing
                total -= shard.size
            continue
        try:
            shard.path.unlink()
        except FileNotFoundError:  # another process deleted it first: gone all the same
            pass
        except OSError:  # not ours to delete (permissions): it stays and counts
            continue
        total -= shard.size
        deleted.append(shard.path)
    return total + need <= cap, deleted
