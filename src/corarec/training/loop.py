"""One training loop for every LLM method.

AdamW on the method's trainable weights only (the LLM and the CF model stay frozen), linear
warm-up then cosine decay, gradient clipping, BCE-with-logits on the method's score, validation
AUC every ``eval_every`` steps, the best weights kept, early stopping with patience, and a
checkpoint after every validation (and every ``checkpoint_every`` steps, when set) so that
``--resume`` continues an interrupted run exactly.
Every validation point of the learning curve (``metrics.json``: ``valid_curve``) records the mean
training loss and the mean and largest gradient norm of the steps since the previous point; with
``log_dir`` the same training is written as TensorBoard scalars (:mod:`corarec.utils.tracking`).

The run directory is the one given as ``out``, also on ``--resume`` (the ``out`` recorded in
``config.json`` is information only, so a copied run resumes in the copy). One process writes a run
directory at a time: :func:`corarec.utils.outdir.run_lock` holds ``<out>/.lock`` while it trains.

Under a launcher with several processes (``torchrun``, ``accelerate launch``;
:mod:`corarec.utils.distributed`) the same call trains data-parallel: every process holds the whole
model, a step's rows are split between the processes (and, with ``gradient_accumulation`` > 1, into
that many micro-batches in each), DDP averages the gradients, and one optimizer step is taken on the
mean loss of all the step's rows. A step therefore trains ``batch_size × processes ×
gradient_accumulation`` rows (the effective batch); with the same effective batch, any split trains
the same rows with the same per-row random draws. Validation scores are gathered from all processes;
only the main process holds the lock and writes the run directory.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from corarec.training.config import RunConfig, resolve_config
from corarec.utils import distributed
from corarec.utils.device import resolve_device
from corarec.utils.seeding import seed_everything
from corarec.errors import CorarecError
from corarec.evaluation.evaluate import report, score_rows
from corarec.evaluation.journal import ENDING as JOURNAL_ENDING, remove_family
from corarec.utils.io import load_tensors, read_json, save_tensors, write_json
from corarec.utils.outdir import LOCK, run_lock
from corarec.utils.tracking import ScalarLog, check_finite_gradient, check_log_dir, gradient_norm, gradient_summary
from corarec.training.checkpoint import CHECKPOINT, TrainState, load_checkpoint, save_checkpoint
from corarec.training.steps import Stepper, backward, effective_batch_size, epoch_order, learning_rate
from corarec.training.runs import CONFIG, METRICS, WEIGHTS, LoadedRun, build_run, read_run_config, write_run_config
from corarec.training.rows import halves_auc, training_rows

VALIDATION_JOURNAL = f"validate{JOURNAL_ENDING}"
"""A validation cut off keeps its scores here for the resumed run (:mod:`corarec.evaluation.journal`)."""


def train(method: str | None = None, data: str | Path | None = None, out: str | Path = "", cf: str | Path | None = None,
          llm: str | None = None, preset: str | None = None, resume: bool = False, init: str | Path | None = None,
          seed: int | None = None, device: str | None = None, bf16: bool | None = None, **settings: Any) -> dict:
    """Train an LLM method and write its run directory; returns the run's metrics. The arguments are
    the options of ``corarec train`` (``method``: None is CoRA).

    ``settings`` are the fields of :class:`~corarec.training.config.TrainConfig` and of the method's
    config by flat name (``lr=1e-4``, ``rank=8``, ``generator_depth=2``: :mod:`corarec.utils.options`);
    None means not given. Settings resolve as: the paper's defaults < ``preset`` (bundled
    'cpu'/'cpu-full'/'demo'/'paper' or a YAML path) < ``settings`` (:func:`~corarec.training.config.resolve_config`).
    With ``resume`` the run in ``out`` continues from its last checkpoint with the settings saved in
    its ``config.json`` (``data`` is then not needed; a setting given beside ``resume`` is an error, not
    silently ignored), and writes to ``out`` wherever the run was first trained. A new run needs an absent or
    empty ``out``.
    While training, ``out`` is locked: a second ``train`` into it stops with an error.
    """
    out = Path(out)
    if resume:
        given = [f"--{name}" for name, value in (("method", method), ("cf", cf), ("llm", llm), ("preset", preset),
                                                   ("init", init), ("seed", seed), ("device", device), ("bf16", bf16))
                 if value is not None]
        given += [f"--{name.replace('_', '-')}" for name, value in settings.items() if value is not None]
        if given:
            raise CorarecError(f"--resume continues {out} with the settings in its config.json; {', '.join(given)} "
                               "cannot change them (drop them, or train a new run into another --out)")
        first = read_run_config(out)
        check_log_dir(first.train.log_dir)  # a clear error before anything is created
        distributed.start(resolve_device(first.device))  # under a launcher: join the other processes
        with distributed.main_holds(lambda: run_lock(out)):
            config = read_run_config(out)  # read again under the lock: what the last writer left
            config.out = str(out.resolve())
            return fit(config, resume=True)
    config = resolve_config(method or "cora", data, out, cf, llm, preset, init, seed, device, bf16, **settings)
    check_log_dir(config.train.log_dir)
    distributed.start(resolve_device(config.device))

    def check_free() -> None:  # checked under the lock, so two commands cannot both find it free
        if (out / CONFIG).exists():
            raise CorarecError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        others = sorted(p.name for p in out.iterdir() if p.name != LOCK)
        if others:
            raise CorarecError(f"{out}: is not empty ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) "
                               "and holds no run; choose a new or empty --out")

    with distributed.main_holds(lambda: run_lock(out), check_free):
        return fit(config)


def fit(config: RunConfig, resume: bool = False) -> dict:
    """Run the training loop that ``config`` describes (see the module docstring)."""
    out = Path(config.out)
    seed_everything(config.seed)
    run = build_run(config)
    tc = config.train
    if config.init:
        load_init(run, Path(config.init))

    train_rows, valid_rows = training_rows(run.dataset, config)
    steps_per_epoch = math.ceil(len(train_rows) / effective_batch_size(tc))
    total_steps = steps_per_epoch * tc.epochs
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)

    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        write_run_config(out, config)
    log_dir = tc.log_dir if distributed.is_main() else None  # one process logs
    state = TrainState(processes=distributed.world_size())
    if not run.method.trains or total_steps == 0:
        with ScalarLog(log_dir) as log:
            metrics = finish_without_training(run, valid_rows, out, log)
        distributed.barrier()
        return metrics

    optimizer = torch.optim.AdamW(run.method.trainable_parameters(), lr=tc.lr, betas=tc.betas,
                                  weight_decay=tc.weight_decay)
    if resume:
        state = load_checkpoint(out / CHECKPOINT, run, optimizer)
    accelerator = distributed.accelerator_for(run.device, run.llm.autocast_dtype)
    score, stepping = distributed.prepare_training(run.method, optimizer, accelerator)
    # a resume redoes the steps after the checkpoint: TensorBoard hides what the cut-off attempt logged of them
    with ScalarLog(log_dir, resume_step=state.step + 1 if resume else None) as log:
        train_steps(run, train_rows, valid_rows, state, optimizer, total_steps, steps_per_epoch, log,
                    Stepper(score, stepping, accelerator))
    state.finished = True
    metrics = write_metrics(out, state, run)
    distributed.barrier()  # every process returns once the run directory is complete
    return metrics


def train_steps(run: LoadedRun, train_rows: pd.DataFrame, valid_rows: pd.DataFrame, state: TrainState,
                optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int, log: ScalarLog,
                stepper: Stepper | None = None) -> None:
    """Optimizer steps from ``state.step`` to ``total_steps`` (or early stopping), validating every ``eval_every``."""
    config, tc, out = run.config, run.config.train, Path(run.config.out)
    stepper = stepper or Stepper(run.method.score, optimizer)
    step_rows = effective_batch_size(tc)
    progress = tqdm(total=total_steps, initial=state.step, desc=f"train {config.method}", unit="step",
                    disable=not distributed.is_main())
    running_loss = None
    lengths = run.batcher.token_lengths(train_rows) if tc.group_by_length else None  # [N] tokens a prompt
    order_epoch, order = None, None  # the epoch whose row order is at hand, and that order
    started = time.perf_counter() - state.train_seconds
    while state.step < total_steps and not state.stopped_early:
        step_started = time.perf_counter()
        epoch, position = divmod(state.step, steps_per_epoch)
        if epoch != order_epoch:
            order_epoch, order = epoch, epoch_order(len(train_rows), config.seed, epoch, step_rows, lengths)
        rows = train_rows.iloc[order[position * step_rows:(position + 1) * step_rows]]

        lr = learning_rate(state.step, total_steps, tc)
        for group in optimizer.param_groups:
            group["lr"] = lr
        run.method.train()
        stepper.optimizer.zero_grad(set_to_none=True)
        value = backward(run, stepper, rows)  # the mean loss of the step's rows, over all processes
        scaler = stepper.accelerator.scaler if stepper.accelerator is not None else None
        if scaler is not None:  # fp16: measure and clip the gradients themselves, not the scaled ones
            stepper.accelerator.unscale_gradients()
        norm = gradient_norm(run.method.trainable_parameters(), tc.grad_clip)  # measured before clipping, then clipped
        if scaler is None:  # with the fp16 loss scaler an overflow skips the step and lowers the scale
            check_finite_gradient(norm, state.step + 1)
        stepper.optimizer.step()
        state.step += 1

        if not math.isfinite(value):
            raise CorarecError(f"training diverged at step {state.step} (loss {value}); lower --lr")
        state.losses_since_eval.append(value)
        if math.isfinite(norm):
            state.grad_norms_since_eval.append(norm)
        log.scalars(state.step, {"train/loss": value, "train/lr": lr, "train/grad_norm": norm,
                                 "train/rows_per_second": len(rows) / max(time.perf_counter() - step_started, 1e-9)})
        running_loss = value if running_loss is None else 0.9 * running_loss + 0.1 * value
        progress.update(1)
        progress.set_postfix(loss=f"{running_loss:.4f}", valid_auc=_last_auc(state))

        if state.step % tc.eval_every == 0 or state.step == total_steps:
            state.train_seconds = time.perf_counter() - started
            validate(run, valid_rows, state, out, optimizer, log)
            progress.set_postfix(loss=f"{running_loss:.4f}", valid_auc=_last_auc(state))
        elif tc.checkpoint_every and state.step % tc.checkpoint_every == 0:
            state.train_seconds = time.perf_counter() - started
            save_checkpoint(out / CHECKPOINT, run, optimizer, state)
    progress.close()


def validate(run: LoadedRun, valid_rows, state: TrainState, out: Path, optimizer, log: ScalarLog | None = None) -> None:
    """Score the validation rows, keep the best weights, checkpoint, update early stopping. The losses and
    gradient norms of the steps since the previous validation (``state``) are summarised in the curve point
    and start again empty."""
    tc = run.config.train
    losses, grad_norms = state.losses_since_eval, state.grad_norms_since_eval
    state.losses_since_eval, state.grad_norms_since_eval = [], []
    scores = validation_scores(run, valid_rows, out)
    metrics = report(valid_rows, scores, run.dataset.train)
    auc = metrics["all"]["auc"]
    state.curve.append({"step": state.step, "valid_auc": auc, "valid_auc_halves": halves_auc(valid_rows, scores),
                        "train_loss": float(np.mean(losses)) if losses else None,
                        **gradient_summary(list(grad_norms)), "seconds": round(state.train_seconds, 1)})
    log_validation(log, state.step, metrics)
    if auc is not None and auc > state.best_valid_auc:
        state.best_valid_auc, state.best_step, state.best_valid = auc, state.step, metrics
        state.evals_without_improvement = 0
        if distributed.is_main():  # every process holds the same weights (DDP): one writes them
            save_tensors(out / WEIGHTS, run.method.trainable_state_dict())
            run.method.save_extra(out)
    else:
        state.evals_without_improvement += 1
        if state.evals_without_improvement >= tc.patience:
            state.stopped_early = True
    save_checkpoint(out / CHECKPOINT, run, optimizer, state)
    write_metrics(out, state, run)


def validation_scores(run: LoadedRun, valid_rows, out: Path) -> np.ndarray:
    """The validation rows' scores ``[N]``, kept in a scoring journal while they are computed (a cut-off validation
    goes on there after ``--resume``); once complete, every validation journal of the run goes."""
    scores = score_rows(run, valid_rows, desc="validate", journal=out / VALIDATION_JOURNAL)
    if distributed.is_main():  # earlier validations' journals too: the run has moved past them
        remove_family(out / VALIDATION_JOURNAL)
    return scores


def log_validation(log: ScalarLog | None, step: int, metrics: dict) -> None:
    """Validation AUC and UAUC (all rows; AUC of warm and cold rows too) as TensorBoard scalars, flushed."""
    if log is None or not log.enabled:
        return
    log.scalars(step, {"valid/auc": metrics["all"]["auc"], "valid/uauc": metrics["all"]["uauc"],
                       **{f"valid/{part}_auc": metrics[part]["auc"] for part in ("warm", "cold") if part in metrics}})
    log.flush()


def write_metrics(out: Path, state: TrainState, run: LoadedRun) -> dict:
    """Write the training's ``metrics.json`` (keeping any other keys, e.g. splits an older version evaluated);
    with several processes the main one writes, and every one returns the metrics."""
    path = out / METRICS
    metrics = read_json(path) if distributed.is_main() and path.is_file() else {}
    metrics.update({
        "method": run.config.method,
        "best_valid_auc": state.best_valid_auc if state.best_step >= 0 else None,
        "best_step": state.best_step,
        "steps": state.step,
        "stopped_early": state.stopped_early,
        "finished": state.finished,
        "train_seconds": round(state.train_seconds, 1),
        "trainable_parameters": run.method.n_trainable(),
        "valid": state.best_valid,
        "valid_curve": state.curve,
    })
    if distributed.is_main():
        write_json(path, metrics)
    return metrics


def finish_without_training(run: LoadedRun, valid_rows, out: Path, log: ScalarLog | None = None) -> dict:
    """Evaluation-only methods (ICL): score validation once and write the run directory."""
    state = TrainState()
    scores = validation_scores(run, valid_rows, out)
    state.best_valid = report(valid_rows, scores, run.dataset.train)
    state.best_valid_auc, state.best_step = state.best_valid["all"]["auc"], 0
    state.finished = True
    state.curve.append({"step": 0, "valid_auc": state.best_valid_auc, "valid_auc_halves": halves_auc(valid_rows, scores),
                        "train_loss": None, **gradient_summary([]), "seconds": 0.0})
    log_validation(log, 0, state.best_valid)
    if distributed.is_main():
        save_tensors(out / WEIGHTS, run.method.trainable_state_dict())
    return write_metrics(out, state, run)


def load_init(run: LoadedRun, init: Path) -> None:
    """Initialise from another run's weights: every tensor whose name and shape match is copied."""
    state = load_tensors(init / WEIGHTS)
    own = run.method.trainable_state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CorarecError(f"{init / WEIGHTS}: no weight matches this {run.config.method} model; wrong --init run?")
    own.update(matched)
    run.method.load_trainable_state_dict({k: v.to(run.device) for k, v in own.items()}, source=str(init / WEIGHTS))


def _last_auc(state: TrainState) -> str:
    return f"{state.curve[-1]['valid_auc']:.4f}" if state.curve and state.curve[-1]["valid_auc"] is not None else "-"
