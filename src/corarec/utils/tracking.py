"""Training you can watch: a training's scalars as TensorBoard event files, and gradient-norm monitoring.

``corarec train --log-dir DIR`` and ``corarec train-cf --log-dir DIR`` (the settings
``TrainConfig.log_dir`` and ``CFConfig.log_dir``, so a preset can set them too) write, through
TensorBoard's own writer (:class:`torch.utils.tensorboard.SummaryWriter`), with the optimizer step as
the x axis::

    train/loss               the step's BCE loss                         every step
    train/grad_norm          total L2 norm of the gradients, before clipping   every step
    train/lr                 the learning rate                           every step (train-cf: every epoch)
    train/rows_per_second    training rows per second                    every step (train-cf: every epoch)
    valid/auc, valid/uauc    validation AUC and user-averaged AUC        every validation
    valid/warm_auc, valid/cold_auc   (train only) AUC of warm and cold validation rows

``tensorboard --logdir DIR`` shows them (``--logdir`` a parent folder compares runs side by side).
The ``tensorboard`` package is an optional extra (``pip install 'corarec[tensorboard]'``); asking for
a log directory without it is one clear error before any work starts. Without a log directory
nothing is imported and nothing is written.

Independently of any log directory, every point of a run's learning curve in ``metrics.json``
records ``grad_norm_mean`` and ``grad_norm_max`` of the steps since the previous point
(:func:`gradient_summary`), so a run whose gradients blow up shows it after the fact.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import torch

from corarec.errors import CorarecError

INSTALL_HINT = "pip install tensorboard (or pip install 'corarec[tensorboard]')"
EVENT_FILE_PREFIX = "events.out.tfevents."
"""How TensorBoard's event files are named (``events.out.tfevents.<time>.<host>...``)."""


def summary_writer_class(log_dir: str | Path) -> type:
    """TensorBoard's ``SummaryWriter``; a clear error naming ``log_dir`` when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CorarecError(f"--log-dir {log_dir}: writing TensorBoard logs needs the tensorboard package, "
                           f"which is not installed; {INSTALL_HINT}") from None
    return SummaryWriter


def check_log_dir(log_dir: str | Path | None) -> None:
    """Fail early (before any training) when ``log_dir`` cannot be used: tensorboard missing, or a file there."""
    if log_dir is None:
        return
    summary_writer_class(log_dir)
    if Path(log_dir).exists() and not Path(log_dir).is_dir():
        raise CorarecError(f"--log-dir {log_dir}: is a file, not a directory; choose a directory for the TensorBoard logs")


class ScalarLog:
    """Scalars of one training, written to ``log_dir`` as TensorBoard event files; with ``log_dir``
    None every call does nothing. A resumed training passes ``resume_step``, the first step it will
    redo: TensorBoard then hides what the interrupted attempt logged from that step on (nothing is deleted).
    Use as a context manager (the writer is flushed and closed on exit, an interruption included)."""

    def __init__(self, log_dir: str | Path | None, resume_step: int | None = None):
        self.log_dir = None if log_dir is None else Path(log_dir)
        self._writer = None
        if self.log_dir is not None:
            check_log_dir(self.log_dir)
            writer_class = summary_writer_class(self.log_dir)
            try:
                self._writer = writer_class(str(self.log_dir), purge_step=resume_step, flush_secs=30)
            except OSError as e:
                raise CorarecError(f"--log-dir {self.log_dir}: cannot write TensorBoard logs there ({e})") from None

    @property
    def enabled(self) -> bool:
        """Whether scalars are written anywhere (a log directory was given)."""
        return self._writer is not None

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        """Record ``values`` (tag → number; None, an undefined metric, is left out) at ``step``."""
        if self._writer is None:
            return
        for tag, value in values.items():
            if value is not None:
                self._writer.add_scalar(tag, float(value), global_step=step)

    def flush(self) -> None:
        """Write what is pending to disk now (after a validation: a watcher sees it at once)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "ScalarLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def event_files(log_dir: str | Path) -> list[Path]:
    """The TensorBoard event files under ``log_dir`` (sub-directories included), sorted."""
    return sorted(p for p in Path(log_dir).rglob(f"{EVENT_FILE_PREFIX}*") if p.is_file())


def gradient_norm(parameters: Iterable[torch.nn.Parameter], clip: float = 0.0) -> float:
    """Total L2 norm of the gradients of ``parameters``, measured before clipping; with ``clip`` > 0
    the gradients are then clipped to that norm (:func:`torch.nn.utils.clip_grad_norm_`, which
    measures the same norm). Parameters without a gradient are left out."""
    if clip > 0:
        return float(torch.nn.utils.clip_grad_norm_(parameters, clip))
    grads = [p.grad for p in parameters if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]) if grads else None  # [n]
    return float(torch.linalg.vector_norm(norms)) if grads else 0.0  # as clip_grad_norm_ measures it (any torch >= 2.4)


def check_finite_gradient(norm: float, step: int) -> None:
    """A gradient norm that is NaN or infinite means training diverged: stop before the update spreads it."""
    if not math.isfinite(norm):
        raise CorarecError(f"training diverged at step {step} (gradient norm {norm}); lower --lr")


def gradient_summary(norms: list[float]) -> dict[str, float | None]:
    """``grad_norm_mean`` and ``grad_norm_max`` of the gradient norms of some steps (None when there were none)."""
    if not norms:
        return {"grad_norm_mean": None, "grad_norm_max": None}
    return {"grad_norm_mean": sum(norms) / len(norms), "grad_norm_max": max(norms)}
