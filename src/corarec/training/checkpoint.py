"""Training checkpoints: where a training stands, saved after every validation (and every
``checkpoint_every`` steps, when set) so that ``--resume`` continues it exactly (safetensors and JSON; no
pickles).

``RUN/checkpoint/`` holds ``trainable.safetensors`` (the weights being trained),
``optimizer.safetensors`` (AdamW's moments, and the torch RNG state of every process: ``rng.torch``,
``rng.torch.<rank>``, ``rng.cuda`` on a GPU) and ``state.json`` (:class:`TrainState`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from corarec.errors import CorarecError
from corarec.training.runs import METRICS, LoadedRun
from corarec.utils import distributed
from corarec.utils.io import atomic_dir, load_tensors, read_json, recover_dir, save_tensors, write_json

CHECKPOINT = "checkpoint"


@dataclass
class TrainState:
    """Where training stands; saved with every checkpoint."""

    step: int = 0
    best_valid_auc: float = -1.0
    best_step: int = -1
    evals_without_improvement: int = 0
    train_seconds: float = 0.0
    curve: list[dict[str, Any]] = field(default_factory=list)
    best_valid: dict[str, Any] | None = None
    stopped_early: bool = False
    finished: bool = False
    processes: int = 1
    """How many processes train (a resume needs as many: a step's rows depend on it)."""
    losses_since_eval: list[float] = field(default_factory=list)
    """Training losses of the steps since the last validation (its curve point's mean; kept by a checkpoint
    taken between validations)."""
    grad_norms_since_eval: list[float] = field(default_factory=list)
    """Gradient norms of the same steps (finite ones)."""


def save_checkpoint(path: Path, run: LoadedRun, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
    """Weights, optimizer moments, RNG states (every process's) and the loop position, written atomically
    (by the main process; every process calls it)."""
    tensors = {f"optimizer.{index}.{name}": value
               for index, moments in optimizer.state_dict()["state"].items()
               for name, value in moments.items()}
    tensors.update(distributed.rng_states(run.device))  # rng.torch (and rng.cuda on a GPU), rng.torch.<rank>
    if not distributed.is_main():
        return
    with atomic_dir(path) as tmp:
        save_tensors(tmp / "trainable.safetensors", run.method.trainable_state_dict())
        save_tensors(tmp / "optimizer.safetensors", tensors)
        write_json(tmp / "state.json", asdict(state))


def load_checkpoint(path: Path, run: LoadedRun, optimizer: torch.optim.Optimizer) -> TrainState:
    """Restore what :func:`save_checkpoint` wrote (each process its own RNG state). A checkpoint
    written by another number of processes is refused: its steps had other rows."""
    if distributed.is_main():
        recover_dir(path)  # a kill between the two renames of the swap leaves the last checkpoint in .NAME.old
    distributed.barrier()
    processes = distributed.world_size()
    if not (path / "state.json").is_file():
        if not (path.parent / METRICS).is_file():  # stopped before its first checkpoint (and validation):
            if distributed.is_main():
                tqdm.write(f"{path.parent}: stopped before its first checkpoint; training from step 0")
            return TrainState(processes=processes)  # the same start as the first attempt (everything above is seeded)
        raise CorarecError(f"{path}: no checkpoint to resume from, but {METRICS} records validations; "
                           "was the checkpoint removed?")
    saved = read_json(path / "state.json")
    unknown = sorted(set(saved) - {f.name for f in fields(TrainState)})
    if unknown:
        raise CorarecError(f"{path}/state.json: written by a newer corarec (unknown {', '.join(unknown)}); "
                           "resume it with that version")
    state = TrainState(**saved)
    if state.processes != processes:
        raise CorarecError(f"{path}: written by a training in {state.processes} process(es), resumed in {processes}; "
                           f"resume it with {state.processes} (e.g. torchrun --nproc_per_node {state.processes})")
    weights = load_tensors(path / "trainable.safetensors")
    run.method.load_trainable_state_dict({k: v.to(run.device) for k, v in weights.items()}, source=str(path))
    tensors = load_tensors(path / "optimizer.safetensors")
    distributed.restore_rng_state(tensors, run.device)
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("rng."):
            continue
        _, index, name = key.split(".", 2)
        moments.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": moments, "param_groups": optimizer.state_dict()["param_groups"]})
    return state
