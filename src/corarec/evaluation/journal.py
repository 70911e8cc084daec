"""A scoring journal: the scores of a long scoring pass, saved as it goes, so that a pass cut off
(Ctrl-C, a killed job) goes on where it stopped instead of scoring every row again.

:func:`corarec.evaluation.evaluate.score_rows` with ``journal=NAME.partial.safetensors`` keeps one
safetensors file, ``NAME-<key>.partial.safetensors`` beside it::

    scores  [N] float32   the logits of the rows scored so far (0 elsewhere)
    done    [N] uint8     1 where a row has been scored

``<key>`` begins a digest of everything the scores depend on: the rows' prompts and CF inputs, the batch size
(a pass's batches are a function of the rows and the batch size), the method's trained weights and its frozen
CF model's, the LLM (the prefix cache's fingerprint of its config and weights, and the tokenizer), the run's
settings, the device and precision, and the torch, transformers, peft and corarec versions. Another pass has another
file, so a pass never reads nor replaces another's scores. The file is written atomically every
:data:`SAVE_SECONDS` and when the pass stops on an error or Ctrl-C, and removed when the pass completes. A resumed
pass scores exactly the batches not done, each with the same rows as before, so its scores are those of a pass
that was never cut off. A journal that cannot be written (a full disk, a read-only run) is given up with one
warning; the pass goes on without it. The journal of a pass never run again to completion (other rows, other
options) stays where it is, a few bytes a row, until removed by hand.

Where the library keeps journals: ``RUN/eval/<split>-<key>.partial.safetensors`` (``corarec evaluate``;
``ranking-test-<key>`` for ``--ranking``),
``RUN/eval/benchmark-test-<key>.partial.safetensors`` (``corarec benchmark``'s test rows),
``RUN/validate-<key>.partial.safetensors`` (a training's validation, and the zero-shot method's only pass; a
completed validation removes every validation journal of the run: the run has moved past them) and
``OUT-<key>.partial.safetensors`` beside ``corarec predict``'s output file.
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
from tqdm.auto import tqdm

from corarec.llm.prefix_cache import llm_fingerprint
from corarec.utils.io import save_tensors

if TYPE_CHECKING:
    from corarec.training.runs import LoadedRun

SAVE_SECONDS = 30.0
"""How often a scoring pass saves its journal (it also saves when it stops on an error or Ctrl-C)."""
FORMAT = "1"
"""The journal file's format (a file of another format is not read)."""
ENDING = ".partial.safetensors"
"""How a journal's name ends."""


class ScoreJournal:
    """The journal of one scoring pass: ``run`` scoring ``rows`` in batches of ``batch_size``; ``family`` names
    the pass's kind (``DIR/NAME.partial.safetensors``), the file gets the pass's key in its name."""

    def __init__(self, family: str | Path, run: "LoadedRun", rows: pd.DataFrame, batch_size: int):
        family = Path(family)
        self.key = pass_key(run, rows, batch_size)
        stem = family.name.removesuffix(ENDING)
        self.path = family.with_name(f"{stem}-{self.key[:16]}{ENDING}")
        self.broken = False
        self.last_save = time.monotonic()

    def load(self, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(scores [n] float32, done [n] bool)`` saved by an earlier attempt at this pass; None when there
        is none, or it is unreadable (this pass then writes it anew)."""
        if not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT or meta.get("key") != self.key:
                    return None
                scores, done = f.get_tensor("scores").numpy(), f.get_tensor("done").numpy().astype(bool)
        except Exception:  # a damaged file: this pass starts afresh and overwrites it
            return None
        if scores.shape != (n,) or done.shape != (n,):
            return None
        return scores.astype(np.float32), done

    def save(self, scores: np.ndarray, done: np.ndarray) -> None:
        """Write the scores so far, atomically; a failed write gives the journal up (one warning), never the pass."""
        if self.broken:
            return
        try:
            save_tensors(self.path, {"scores": torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)),
                                     "done": torch.from_numpy(done.astype(np.uint8))},
                         metadata={"format": FORMAT, "key": self.key})
        except Exception as e:  # OSError, or safetensors' own error for a failed write (a full disk)
            self.broken = True
            tqdm.write(f"warning: {self.path}: cannot save the scoring journal ({e}); scoring goes on without it")
        self.last_save = time.monotonic()

    def save_if_due(self, scores: np.ndarray, done: np.ndarray) -> None:
        """:meth:`save` when :data:`SAVE_SECONDS` have passed since the last save."""
        if time.monotonic() - self.last_save >= SAVE_SECONDS:
            self.save(scores, done)

    def remove(self) -> None:
        """The pass completed: its journal is no longer needed."""
        _unlink(self.path)


def remove_family(family: str | Path) -> None:
    """Remove every journal of the kind ``family`` names (``DIR/NAME.partial.safetensors``): e.g. a training's
    validation journals once a validation completed (the run has moved past them)."""
    family = Path(family)
    for path in family.parent.glob(f"{family.name.removesuffix(ENDING)}-*{ENDING}"):
        _unlink(path)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # a leftover journal is harmless: nothing reads it but its own pass
        pass


def pass_key(run: "LoadedRun", rows: pd.DataFrame, batch_size: int) -> str:
    """A digest of what ``run``'s scores of ``rows`` in batches of ``batch_size`` depend on."""
    import transformers

    import corarec

    digest = hashlib.sha256()
    settings = {k: v for k, v in _config_dict(run).items() if k != "out"}  # a copied run keeps its journal
    device = run.device
    tokenizer = run.llm.tokenizer
    digest.update(json.dumps({
        "settings": settings, "batch_size": batch_size, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "autocast": str(run.llm.autocast_dtype), "llm": llm_fingerprint(run.llm),
        "tokenizer": [type(tokenizer).__name__, getattr(tokenizer, "name_or_path", None), len(tokenizer)],
        "versions": [torch.__version__, transformers.__version__, _version("peft"), corarec.__version__],
    }, sort_keys=True, default=str).encode())
    # the trained weights and the frozen CF model (the LLM, and a LoRA inside it, are in its fingerprint)
    tensors = {**run.method.trainable_state_dict(),
               **({f"cf.{k}": v for k, v in run.method.cf.state_dict().items()} if run.method.cf is not None else {})}
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # the exact bytes
    digest.update("\0".join(run.batcher.prompts(rows)).encode())
    for column in ("user_id", "item_id"):
        digest.update(np.ascontiguousarray(rows[column].to_numpy(), dtype=np.int64).tobytes())
    digest.update(repr([list(map(int, h)) for h in rows["history"]]).encode())
    return digest.hexdigest()


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _config_dict(run: "LoadedRun") -> dict:
    from corarec.training.config import to_dict

    return to_dict(run.config)
