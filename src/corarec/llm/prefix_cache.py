"""Prefix cache: the frozen LLM's hidden states entering layer L, computed once per prompt.

When CoRA injects only into layers ``L..n-1`` (``layers="top:8"``), everything below layer L is
the frozen LLM reading a fixed prompt: the hidden states entering layer L depend on the prompt's
tokens alone. They are computed once, stored on disk, and every later pass (every epoch, every
validation) runs only layers ``L..n-1`` from them (:func:`~corarec.llm.layer_split.start_at_layer`).

Keying (a stale entry can never be read):

- a cache directory per ``(LLM name, LLM fingerprint, prompt template id, layer L, compute dtype,
  storage dtype)``; the fingerprint hashes the model config and a strided sample of every weight
  tensor, so different weights under the same name get a different directory;
- inside it, one entry per prompt, named by the SHA-256 of the prompt's token ids (padding
  excluded): a changed prompt is a different entry.

Storage: safetensors shards (``shard-*.safetensors``, written atomically), one tensor
``[n_tokens, d]`` per prompt, bf16 by default (≈ 184 KB for 160 tokens × 576 dims). Only real
tokens are stored; a batch is rebuilt left-padded with zeros at the pad positions (which the
attention mask hides). New entries are buffered in memory and written every ``shard_rows`` rows and
on :meth:`PrefixCache.flush`; an interrupted process only loses the unflushed entries.

Size cap (:mod:`corarec.llm.prefix_cap`): all cache directories under the root together hold at most
``max_gb`` GB (default 15, or ``$CORAREC_PREFIX_CACHE_MAX_GB``); writing a shard first deletes the
least recently used shards this process does not read itself. A row whose shard is gone (evicted,
by this process or another sharing the root) is recomputed, never an error. When this run's own
rows fill the cap, new shards are not written, one warning says so, and those rows are computed at
every pass.

Running from layer L (:mod:`corarec.llm.layer_split`) needs no forked modeling code. The first batch a
cache serves is checked against the full forward (:meth:`PrefixCache.verify`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from corarec.utils.assets import cache_dir
from corarec.errors import CorarecError
from corarec.utils.io import save_tensors, write_json
from corarec.llm.prefix_cap import MAX_GB_ENV, TOUCH_EVERY_S, make_room, max_bytes
from corarec.llm.layer_split import layer_inputs, start_at_layer
from corarec.llm.model import LLM, answer_logits

FORMAT = 1  # bump when the stored layout changes


def llm_fingerprint(llm: LLM) -> str:
    """A cheap hash of the model's config and a strided sample (≤ 1024 values) of every weight tensor."""
    h = hashlib.sha256(llm.model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, p in llm.model.state_dict().items():
            flat = p.reshape(-1)
            sample = flat[:: max(1, flat.numel() // 1024)].float().cpu()
            h.update(name.encode() + str(tuple(p.shape)).encode() + sample.numpy().tobytes())
    return h.hexdigest()[:16]


def row_key(token_ids: torch.Tensor) -> str:
    """Name of one prompt's entry: SHA-256 of its (unpadded) token ids."""
    return hashlib.sha256(token_ids.to(torch.int64).cpu().numpy().tobytes()).hexdigest()[:32]


class PrefixCache:
    """Disk-backed hidden states entering one layer, for one LLM and one prompt template."""

    def __init__(
        self,
        llm: LLM,
        layer: int,
        template_id: str,
        root: str | Path | None = None,
        dtype: torch.dtype = torch.bfloat16,
        shard_rows: int = 256,
        max_gb: float | None = None,
    ):
        """``root``: the cache root (default ``<corarec cache dir>/prefix``); ``max_gb``: the size cap of
        everything under it in GB (None: ``$CORAREC_PREFIX_CACHE_MAX_GB``, else 15)."""
        if not 0 <= layer < llm.n_layers:
            raise CorarecError(f"prefix cache layer {layer}: the LLM has layers 0..{llm.n_layers - 1}")
        self.llm, self.layer, self.dtype, self.shard_rows = llm, layer, dtype, shard_rows
        self.key = {
            "format": FORMAT,
            "llm": llm.name,
            "fingerprint": llm_fingerprint(llm),
            "template": template_id,
            "layer": layer,
            "weights_dtype": str(next(llm.model.parameters()).dtype),
            "compute_dtype": str(llm.autocast_dtype or torch.float32),
            "dtype": str(dtype),
        }
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.root = Path(root) if root is not None else cache_dir() / "prefix"
        self.max_bytes = max_bytes(max_gb)
        self.dir = self.root / f"{template_id}-L{layer}-{digest}"
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "key.json").is_file():
            write_json(self.dir / "key.json", self.key)
        self._shards: dict[str, Path] = {}  # row key → shard file holding it
        self._handles: dict[Path, object] = {}  # shard file → its open safe_open handle
        self._used: dict[Path, float] = {}  # shards this cache read or wrote → when it last marked them used
        self._pending: dict[str, torch.Tensor] = {}  # row key → [n, d] not yet on disk
        self._verified = False
        self._told_full = False
        self.hits = self.misses = 0
        for path in sorted(self.dir.glob("shard-*.safetensors")):
            self._open_shard(path)

    def __len__(self) -> int:
        return len(self._shards) + len(self._pending)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states entering the layer for a left-padded batch: ``[B, T, d]``, fp32.

        Rows not yet cached are computed (layers below L only) and stored.
        """
        mask = attention_mask.bool()
        keys = [row_key(input_ids[b][mask[b]]) for b in range(len(input_ids))]
        rows = [self._lookup(k) for k in keys]  # [n_b, d] each, None where not cached (or gone)
        missing = [b for b, row in enumerate(rows) if row is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = layer_inputs(self.llm, self.layer, input_ids[missing], attention_mask[missing])  # [m, T, d]
            for j, b in enumerate(missing):
                rows[b] = self._pending[keys[b]] = computed[j][mask[b]].to("cpu", self.dtype).clone()  # [n_b, d]
            if len(self._pending) >= self.shard_rows:
                self.flush()
        B, T = input_ids.shape
        hidden = torch.zeros(B, T, self.llm.hidden_size)  # [B, T, d]; pad positions stay 0
        for b, row in enumerate(rows):
            hidden[b, mask[b].cpu()] = row.float()
        hidden = hidden.to(input_ids.device)
        if not self._verified:
            self.verify(input_ids, attention_mask, hidden)
        return hidden

    def verify(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, hidden: torch.Tensor) -> None:
        """Check that running from the cached states reproduces the full forward's answer logits
        (catches architectures whose decoder layers cannot be skipped this way)."""
        was_training = self.llm.model.training
        self.llm.model.eval()  # no dropout (e.g. a LoRA's) between the two passes
        try:
            with torch.no_grad():
                full = answer_logits(self.llm, input_ids, attention_mask)  # [B, V]
                with start_at_layer(self.llm, self.layer, hidden):
                    cached = answer_logits(self.llm, input_ids, attention_mask)  # [B, V]
        finally:
            self.llm.model.train(was_training)
        err = (full - cached).abs().max().item()
        # fp32 end to end agrees to ~1e-5; bf16 storage/compute to a few 0.01 on logits of size ~10-30
        tol = 1e-3 if self.dtype == torch.float32 and self.llm.autocast_dtype is None else 0.05 * full.abs().max().item()
        if not err <= tol:
            raise CorarecError(
                f"prefix cache: logits from cached layer-{self.layer} inputs differ from the full forward by "
                f"{err:.3g} (> {tol:.3g}) for {type(self.llm.model).__name__}; run without --cache-prefix"
            )
        self._verified = True

    def flush(self) -> None:
        """Write the buffered entries as one new shard (atomically), after making room under the cap;
        when only shards this cache reads are left to delete and it still does not fit, the entries are
        dropped (they are computed again when next needed) and the run is told once."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        # tensor bytes plus the safetensors header (≈ 100 bytes of JSON a row, the key in the metadata)
        need = sum(t.numel() * t.element_size() + 128 for t in pending.values()) + 1024
        fits, deleted = make_room(self.root, need, self.max_bytes, keep=self._used.keys())
        for path in deleted:
            self._forget(path)
        if not fits:
            self._tell_full(pending)
            return
        path = self.dir / f"shard-{time.time_ns()}-{os.getpid()}.safetensors"
        save_tensors(path, pending, metadata={"key": json.dumps(self.key, sort_keys=True)})
        self._open_shard(path)
        self._used[path] = time.monotonic()

    def _open_shard(self, path: Path) -> None:
        try:
            handle = safe_open(str(path), framework="pt")
        except (OSError, SafetensorError):  # evicted by another process since it was listed: its rows are recomputed
            return
        if (handle.metadata() or {}).get("key") != json.dumps(self.key, sort_keys=True):
            return  # not written for this key (cannot happen unless files were moved): ignore it
        self._handles[path] = handle
        for k in handle.keys():
            self._shards[k] = path

    def _forget(self, path: Path) -> None:
        """Drop a shard that is gone from disk: its rows count as not cached."""
        if self._handles.pop(path, None) is not None:
            self._shards = {k: p for k, p in self._shards.items() if p != path}
        self._used.pop(path, None)

    def _lookup(self, key: str) -> torch.Tensor | None:
        """A cached row ``[n, d]``, or None when it is not cached or its shard is gone."""
        if key in self._pending:
            return self._pending[key]
        path = self._shards.get(key)
        if path is None:
            return None
        if path not in self._used and not path.exists():  # evicted before this run first read it
            self._forget(path)
            return None
        try:
            row = self._handles[path].get_tensor(key)
        except (OSError, SafetensorError):  # unreadable since (evicted where open files cannot be read)
            self._forget(path)
            return None
        now = time.monotonic()
        if now - self._used.get(path, -TOUCH_EVERY_S) >= TOUCH_EVERY_S:
            try:
                os.utime(path)  # its place in the least-recently-used order of every process
            except OSError:  # evicted by another process meanwhile; the open handle still reads it
                pass
            self._used[path] = now
        return row

    def _tell_full(self, dropped: dict[str, torch.Tensor]) -> None:
        """One line, once: this run's rows do not all fit under the cap."""
        if self._told_full:
            return
        self._told_full = True
        row_bytes = sum(t.numel() * t.element_size() for t in dropped.values()) / len(dropped)
        print(f"warning: prefix cache: this run's rows do not fit under the {self.max_bytes / 1e9:g} GB cap of "
              f"{self.root} ({len(self._shards)} rows stored here, {row_bytes / 1e3:.0f} KB a row: about "
              f"{int(self.max_bytes // row_bytes):,} rows fit); the other rows are computed at every pass (same "
              f"results, slower). Raise the cap (--prefix-cache-max-gb, prefix_cache_max_gb in a preset, or "
              f"${MAX_GB_ENV}) or turn the cache off (--no-cache-prefix)", file=sys.stderr, flush=True)

    def __enter__(self) -> "PrefixCache":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()
