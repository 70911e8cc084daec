"""The prefix cache's size cap: least recently used shards go first, a run's own shards stay, a run that
does not fit is told once, a shard that vanishes is recomputed, and nothing but cache shards is deleted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import corarec.llm.prefix_cache as pc
from corarec.errors import CorarecError
from corarec.llm.layer_split import layer_inputs
from corarec.llm.prefix_cache import PrefixCache
from corarec.llm.prefix_cap import DEFAULT_MAX_GB, MAX_GB_ENV, cache_shards, max_bytes
from corarec.methods.cora import CoRA, CoRAConfig, GeneratorConfig
from corarec.utils.io import _HOST

LAYER = 2
GB = 1e9


def prompts(first: int, n: int = 2) -> list[str]:
    return [f'#Question: Will the user enjoy "Film {i}"? Answer with "Yes" or "No". \n#Answer:'
            for i in range(first, first + n)]


def open_cache(llm, root: Path, template: str = "tallrec-aaaa", max_gb: float = 1.0, **kw) -> PrefixCache:
    """fp32 storage: a row read back is the computed row, bit for bit."""
    return PrefixCache(llm, LAYER, template, root=root, dtype=torch.float32, max_gb=max_gb, **kw)


def store(llm, root: Path, first: int, template: str = "tallrec-aaaa") -> tuple[Path, torch.Tensor]:
    """Cache the rows of ``prompts(first)`` in a new shard; returns the shard and the hidden states."""
    with open_cache(llm, root, template) as cache:
        hidden = cache.hidden_states(*llm.tokenize(prompts(first)))
    (path,) = set(cache._used)
    return path, hidden


def shard_sizes(root: Path) -> dict[Path, int]:
    return {s.path: s.size for s in cache_shards(root)}


def test_writing_past_the_cap_deletes_the_least_recently_used_shards_of_the_whole_root(tiny_llm, tmp_path):
    a, hidden_a = store(tiny_llm, tmp_path, 0)
    b, _ = store(tiny_llm, tmp_path, 2, template="tallrec-bbbb")  # another cache directory under the root
    c, _ = store(tiny_llm, tmp_path, 4)
    size = max(shard_sizes(tmp_path).values())
    now = time.time()
    for path, age in ((a, 100), (b, 300), (c, 200)):  # last use: a newest, then c, b oldest (not the write order)
        os.utime(path, (now - age, now - age))
    cap = 3.5 * size  # three shards fit, a fourth does not

    writer = open_cache(tiny_llm, tmp_path, template="tallrec-cccc", max_gb=cap / GB)
    writer.hidden_states(*tiny_llm.tokenize(prompts(6)))
    writer.flush()
    assert not b.exists() and a.exists() and c.exists()  # only the least recently used one went
    assert sum(shard_sizes(tmp_path).values()) <= cap and len(shard_sizes(tmp_path)) == 3

    # reading marks a shard used for every process: c was older than a; read now, a goes next
    reader = open_cache(tiny_llm, tmp_path)
    reader.hidden_states(*tiny_llm.tokenize(prompts(4)))
    assert reader.hits == 2 and c.stat().st_mtime > now - 10
    writer.hidden_states(*tiny_llm.tokenize(prompts(8)))
    writer.flush()
    assert not a.exists() and c.exists() and sum(shard_sizes(tmp_path).values()) <= cap

    # the evicted rows are computed again, identical to what was cached
    again = open_cache(tiny_llm, tmp_path)
    assert torch.equal(again.hidden_states(*tiny_llm.tokenize(prompts(0))), hidden_a)
    assert (again.hits, again.misses) == (0, 2)


def test_a_run_whose_rows_do_not_fit_keeps_its_own_shards_and_is_told_once(tiny_llm, tmp_path, capsys):
    store(tiny_llm, tmp_path, 0)
    size = max(shard_sizes(tmp_path).values())
    cap = 2.5 * size  # two shards fit
    cache = open_cache(tiny_llm, tmp_path, max_gb=cap / GB, shard_rows=2)  # a shard per batch
    cache.hidden_states(*tiny_llm.tokenize(prompts(0)))  # its first shard: read, so it is kept
    for first in (2, 4, 6):
        ids, mask = tiny_llm.tokenize(prompts(first))
        hidden = cache.hidden_states(ids, mask)
        expected = layer_inputs(tiny_llm, LAYER, ids, mask)
        assert torch.equal(hidden[mask.bool()], expected[mask.bool()])  # same results without a stored shard
    assert len(shard_sizes(tmp_path)) == 2 and sum(shard_sizes(tmp_path).values()) <= cap

    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1, lines  # one line, once
    row_bytes = tiny_llm.tokenize(prompts(4))[1].sum().item() / 2 * 64 * 4  # the first rows left out, fp32
    cap_text = f"{cache.max_bytes / GB:g} GB cap"
    assert lines[0].startswith(f"warning: prefix cache: this run's rows do not fit under the {cap_text}")
    fits = int(cache.max_bytes // row_bytes)
    assert f"4 rows stored here, {row_bytes / 1e3:.0f} KB a row: about {fits:,} rows fit" in lines[0]
    for hint in ("--prefix-cache-max-gb", "prefix_cache_max_gb", MAX_GB_ENV, "--no-cache-prefix"):
        assert hint in lines[0]

    cache.hidden_states(*tiny_llm.tokenize(prompts(2)))  # stored: read again
    cache.hidden_states(*tiny_llm.tokenize(prompts(4)))  # not stored: computed again at the next pass
    assert (cache.hits, cache.misses) == (2 + 2, 2 + 2 + 2 + 2)


def test_a_shard_deleted_under_a_reader_is_recomputed(tiny_llm, tmp_path, monkeypatch):
    x, hidden_x = store(tiny_llm, tmp_path, 0)
    reader = open_cache(tiny_llm, tmp_path)  # has listed and opened x
    assert len(reader) == 2
    # another process, writing under a cap of one shard, evicts x (its own reads do not include x)
    other = open_cache(tiny_llm, tmp_path, template="tallrec-bbbb", max_gb=1.5 * x.stat().st_size / GB)
    other.hidden_states(*tiny_llm.tokenize(prompts(2)))
    other.flush()
    assert not x.exists()
    assert torch.equal(reader.hidden_states(*tiny_llm.tokenize(prompts(0))), hidden_x)
    assert (reader.hits, reader.misses) == (0, 2)

    # gone between the directory listing and opening it
    y, hidden_y = store(tiny_llm, tmp_path, 4)
    real_open = pc.safe_open

    def vanishing_open(path, **kw):
        os.unlink(path)
        return real_open(path, **kw)

    monkeypatch.setattr(pc, "safe_open", vanishing_open)
    late = open_cache(tiny_llm, tmp_path)
    monkeypatch.undo()
    assert len(late) == 0 and not y.exists()
    assert torch.equal(late.hidden_states(*tiny_llm.tokenize(prompts(4))), hidden_y) and late.misses == 2

    # unreadable after opening (where an open file that was deleted cannot be read)
    class Unreadable:
        def get_tensor(self, key):
            raise OSError("gone")

    z, hidden_z = store(tiny_llm, tmp_path, 6)
    broken = open_cache(tiny_llm, tmp_path)
    broken._handles[z] = Unreadable()
    broken._used[z] = time.monotonic()  # already read once: no existence check before reading
    assert torch.equal(broken.hidden_states(*tiny_llm.tokenize(prompts(6))), hidden_z) and broken.misses == 2
    assert z not in broken._handles


def test_eviction_deletes_cache_shards_and_nothing_else(tiny_llm, tmp_path):
    root, outside = tmp_path / "prefix", tmp_path / "outside"
    real, _ = store(tiny_llm, root, 0, template="tallrec-bbbb")
    tensor = {"t": torch.zeros(4096)}
    key_dir = real.parent
    foreign_dir = root / "notes-L1-0123456789abcdef"  # named like a cache directory, without key.json
    foreign_dir.mkdir()
    outside.mkdir()
    (root / "link-L1-fedcba9876543210").symlink_to(outside, target_is_directory=True)
    (outside / "key.json").write_text((key_dir / "key.json").read_text())
    keep = [root / "notes.txt", root / "shard-1-1.safetensors", foreign_dir / "shard-1-2.safetensors",
            key_dir / "shard-1-3.safetensors",  # a shard's name, not a shard of this key
            key_dir / "model.safetensors", outside / "shard-1-4.safetensors", tmp_path / "shard-1-5.safetensors"]
    for path in keep:
        if path.suffix == ".safetensors":
            save_file(tensor, str(path), metadata={"key": "{}"})
        else:
            path.write_text("x")
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(exited.stdout)
    dead = key_dir / f".shard-1-6.safetensors.{dead_pid}-{_HOST}.abc123.tmp"
    live = key_dir / f".shard-1-7.safetensors.{os.getpid()}-{_HOST}.abc123.tmp"
    for path in (dead, live):
        path.write_text("partial")
    for path in keep:  # older than the real shard: first in line if eviction considered them
        os.utime(path, (1, 1))

    writer = open_cache(tiny_llm, root, template="tallrec-cccc", max_gb=1000 / GB)  # not even one shard fits
    writer.hidden_states(*tiny_llm.tokenize(prompts(2)))
    writer.flush()
    assert not real.exists() and not dead.exists()  # the cache's shard and a dead writer's temporary
    assert all(path.exists() for path in keep) and live.exists()
    assert not list((root / writer.dir.name).glob("shard-*"))  # the new shard did not fit either


def test_the_cap_comes_from_the_setting_then_the_environment_then_the_default(tiny_llm, tiny_cf, tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_GB_ENV, raising=False)
    assert max_bytes(None) == DEFAULT_MAX_GB * GB == 15 * GB
    monkeypatch.setenv(MAX_GB_ENV, "2.5")
    assert max_bytes(None) == 2.5 * GB and max_bytes(4.0) == 4 * GB
    for bad in ("abc", "0", "-1", "inf", "nan"):
        monkeypatch.setenv(MAX_GB_ENV, bad)
        with pytest.raises(CorarecError, match=rf"\${MAX_GB_ENV} must be a number of GB greater than 0, got '{bad}'"):
            max_bytes(None)
    monkeypatch.setenv(MAX_GB_ENV, "3")
    cfg = dict(generator=GeneratorConfig(depth=2, heads=2), rank=4, alpha=8.0, layers="top:2", cache_prefix=True,
               prefix_cache_dir=str(tmp_path))
    from_env = CoRA(CoRAConfig(**cfg), tiny_llm, tiny_cf)
    assert from_env.prefix_cache.max_bytes == 3 * GB
    from_env.injector.remove()
    assert CoRA(CoRAConfig(**cfg, prefix_cache_max_gb=0.5), tiny_llm, tiny_cf).prefix_cache.max_bytes == 0.5 * GB
    with pytest.raises(CorarecError, match="prefix_cache_max_gb"):
        CoRAConfig(prefix_cache_max_gb=0)
