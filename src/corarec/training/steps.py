"""What one optimizer step of the training loop does (:mod:`corarec.training.loop`): the learning rate
of the step, the rows per step, and the forward + backward of this process's share of them."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch.nn.functional as F

from corarec.methods.base import RowDraws
from corarec.training.config import TrainConfig
from corarec.training.runs import LoadedRun
from corarec.utils import distributed


def effective_batch_size(tc: TrainConfig) -> int:
    """Rows per optimizer step: ``batch_size × processes × gradient_accumulation``."""
    return tc.batch_size * distributed.world_size() * tc.gradient_accumulation


GROUP_STEPS = 50
"""Steps whose rows ``group_by_length`` sorts together (a window of the epoch's random order)."""


def epoch_order(n_rows: int, seed: int, epoch: int, step_rows: int, lengths: np.ndarray | None = None) -> np.ndarray:
    """``[n_rows]`` the order in which ``epoch`` reads the training rows; step ``i`` of the epoch takes positions
    ``i·step_rows .. (i+1)·step_rows − 1`` of it. A permutation seeded by ``seed + epoch``; with the rows' prompt
    ``lengths`` (``group_by_length``) each window of :data:`GROUP_STEPS` steps of that permutation is sorted by
    length, cut into steps, and its whole steps shuffled (seeded alike). A short last step stays last."""
    order = np.random.default_rng(seed + epoch).permutation(n_rows)
    if lengths is None:
        return order
    shuffle = np.random.default_rng([seed, epoch, 1])
    window = GROUP_STEPS * step_rows
    grouped = []
    for start in range(0, n_rows, window):
        rows = order[start:start + window]
        rows = rows[np.argsort(lengths[rows], kind="stable")]                    # shortest first
        whole = len(rows) // step_rows * step_rows
        steps = rows[:whole].reshape(-1, step_rows)                               # [steps, step_rows]
        grouped += [steps[shuffle.permutation(len(steps))].reshape(-1), rows[whole:]]
    return np.concatenate(grouped)


@dataclass
class Stepper:
    """How the steps run: ``score`` (the method's, or its DDP wrapper), the ``optimizer`` that steps
    (or accelerate's wrapper of it) and the ``accelerator`` (None: a plain single process)."""

    score: Any
    optimizer: Any
    accelerator: Any = None


def backward(run: LoadedRun, stepper: Stepper, rows: pd.DataFrame) -> float:
    """Forward and backward of this process's share of a step's ``rows``; returns the mean loss of all of them.

    The rows are split into ``processes × gradient_accumulation`` contiguous parts (:func:`split_rows`);
    process ``p`` takes parts ``p·A .. p·A + A − 1``, one micro-batch each, gradients synchronised on the
    last. Each part's mean loss is weighted by its share of the step's rows times the processes (DDP
    averages over them), so the gradient is that of the mean loss of the step's rows, whatever the split.
    A process left without rows (a short last step) runs one row at weight 0, to take part in the sync.
    With one process and one micro-batch this is the plain step: the batch's mean loss, one backward.
    """
    world, accumulation = distributed.world_size(), run.config.train.gradient_accumulation
    first = distributed.rank() * accumulation
    mine = distributed.split_rows(len(rows), world * accumulation)[first:first + accumulation]
    draws = run.method.row_draws = RowDraws(len(rows))  # every row's fold-in draw, whichever part holds it
    accelerator, loss_sum = stepper.accelerator, 0.0
    try:
        for index, (start, stop) in enumerate(mine):
            weight = (stop - start) * world / len(rows)  # 1.0 exactly for a plain step
            if start == stop:
                start, stop, weight = 0, 1, 0.0
            draws.offset = start
            batch = run.batcher(rows.iloc[start:stop]).to(run.device)
            last = index == len(mine) - 1
            with contextlib.nullcontext() if last or accelerator is None else accelerator.no_sync(stepper.score):
                with run.llm.autocast():
                    logits = stepper.score(batch)                                     # [b]
                loss = F.binary_cross_entropy_with_logits(logits.float(), batch.labels)
                if weight != 1.0:
                    loss = loss * weight
                accelerator.backward(loss) if accelerator is not None else loss.backward()
            loss_sum += loss.item()
    finally:
        run.method.row_draws = None
    return distributed.total(loss_sum) / world


def learning_rate(step: int, total_steps: int, tc: TrainConfig) -> float:
    """Linear warm-up from ``warmup_start_lr`` to ``lr``, then cosine decay to 0 at ``total_steps``."""
    if step < tc.warmup_steps:
        return tc.warmup_start_lr + (tc.lr - tc.warmup_start_lr) * step / tc.warmup_steps
    decay_steps = max(1, total_steps - tc.warmup_steps)
    progress = min(1.0, (step - tc.warmup_steps) / decay_steps)
    return tc.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
