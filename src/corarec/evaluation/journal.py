"""A scoring journal: the scores of a long scoring pass, saved as it goes, so that a pass cut off
(Ctrl-C, a killed job, a full disk) goes on where it stopped instead of scoring every row again.

:func:`corarec.evaluation.evaluate.score_rows` with ``journal=PATH`` keeps one safetensors file::

    scores  [N] float32   the logits of the rows scored so far (0 elsewhere)
    done    [N] uint8     1 where a row has been scored

with the metadata ``key``: a digest of everything the scores depend on — the rows' prompts and CF
inputs, the batch size (a pass's batches are a function of the rows and the batch size), the method's
weights and buffers (the trained ones and the frozen CF model's), the LLM (the prefix cache's fingerprint of its
config and weights), the run's settings, the device and the precision. A journal whose key differs belongs to another pass: it is not read, and this pass
replaces it. The file is written atomically every :data:`SAVE_SECONDS` and when the pass stops on an
error or Ctrl-C, and removed when the pass completes. A resumed pass scores exactly the batches not
done, each with the same rows as before, so its scores are those of a pass that was never cut off.

Where the library keeps journals: ``RUN/eval/<split>.partial.safetensors`` (``corarec evaluate``),
``RUN/eval/benchmark-test.partial.safetensors`` (``corarec benchmark``'s test rows) and
``RUN/validate.partial.safetensors`` (a training's validation, and the zero-shot method's only pass).
Under a launcher with several processes no journal is kept (each process scores other batches).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from corarec.llm.prefix_cache import llm_fingerprint
from corarec.utils.io import save_tensors

if TYPE_CHECKING:
    from corarec.training.runs import LoadedRun

SAVE_SECONDS = 30.0
"""How often a scoring pass saves its journal (it also saves when it stops on an error or Ctrl-C)."""
FORMAT = "1"
"""The journal file's format (a file of another format is not read)."""


class ScoreJournal:
    """The journal of one scoring pass: ``run`` scoring ``rows`` in batches of ``batch_size``."""

    def __init__(self, path: str | Path, run: "LoadedRun", rows: pd.DataFrame, batch_size: int):
        self.path = Path(path)
        self.key = pass_key(run, rows, batch_size)
        self.last_save = time.monotonic()

    def load(self, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(scores [n] float32, done [n] bool)`` saved by an earlier attempt at this pass; None when there
        is no journal, or it is unreadable or of another pass (it is then replaced by this one's)."""
        if not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT or meta.get("key") != self.key:
                    return None
                scores, done = f.get_tensor("scores").numpy(), f.get_tensor("done").numpy().astype(bool)
        except Exception:  # a foreign or damaged file: this pass starts afresh and overwrites it
            return None
        if scores.shape != (n,) or done.shape != (n,):
            return None
        return scores.astype(np.float32), done

    def save(self, scores: np.ndarray, done: np.ndarray) -> None:
        """Write the scores so far, atomically."""
        save_tensors(self.path, {"scores": torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)),
                                 "done": torch.from_numpy(done.astype(np.uint8))},
                     metadata={"format": FORMAT, "key": self.key})
        self.last_save = time.monotonic()

    def save_if_due(self, scores: np.ndarray, done: np.ndarray) -> None:
        """:meth:`save` when :data:`SAVE_SECONDS` have passed since the last save."""
        if time.monotonic() - self.last_save >= SAVE_SECONDS:
            self.save(scores, done)

    def remove(self) -> None:
        """The pass completed: its journal is no longer needed."""
        self.path.unlink(missing_ok=True)


def pass_key(run: "LoadedRun", rows: pd.DataFrame, batch_size: int) -> str:
    """A digest of what ``run``'s scores of ``rows`` in batches of ``batch_size`` depend on."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in _config_dict(run).items() if k != "out"}  # a copied run keeps its journal
    digest.update(json.dumps({"settings": settings, "batch_size": batch_size, "device": str(run.device),
                              "autocast": str(run.llm.autocast_dtype), "llm": llm_fingerprint(run.llm)},
                             sort_keys=True, default=str).encode())
    for module in (run.method, run.method.cf):
        for name, tensor in (module.state_dict().items() if module is not None else ()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update("\0".join(run.batcher.prompts(rows)).encode())
    for column in ("user_id", "item_id"):
        digest.update(np.ascontiguousarray(rows[column].to_numpy(), dtype=np.int64).tobytes())
    digest.update(repr([list(map(int, h)) for h in rows["history"]]).encode())
    return digest.hexdigest()


def _config_dict(run: "LoadedRun") -> dict:
    from corarec.training.config import to_dict

    return to_dict(run.config)
