"""Score the rows of a split with a method and report AUC / UAUC / GAUC (all, warm, cold).

:func:`evaluate` writes each split's result to its own file, ``RUN/eval/<split>.json``, beside the
training's ``metrics.json``, which it never touches (a later evaluation of the same split replaces
that split's file).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from corarec.training.config import TrainConfig
from corarec.utils import distributed
from corarec.data.sampling import subsample_users
from corarec.data.schema import SPLITS
from corarec.errors import CorarecError
from corarec.utils.io import write_json, write_table
from corarec.evaluation.journal import ENDING as JOURNAL_ENDING, ScoreJournal
from corarec.evaluation.metrics import metric_report, warm_mask
from corarec.utils.settings import check_option

if TYPE_CHECKING:
    from corarec.training.runs import LoadedRun


@torch.no_grad()
def score_rows(run: "LoadedRun", rows: pd.DataFrame, batch_size: int | None = None,
               desc: str = "scoring", progress: bool = True, journal: str | Path | None = None) -> np.ndarray:
    """Logits ``[N]`` of ``run``'s method for ``rows`` (in order), in batches of ``batch_size``
    (default: the run's evaluation batch size), with a progress bar unless ``progress`` is False.

    The method scores in eval mode (no dropout, no fold-in sampling); its previous mode is restored
    afterwards, also when scoring fails. Training, evaluation and serving all score through here.
    Rows are batched in order of prompt length (shortest first), so a batch pads its prompts to
    nearly their own length instead of the longest of a random mix (~15 % fewer tokens on
    MovieLens-100K); the scores come back in the order of ``rows``.

    Under a launcher with several processes (:mod:`corarec.utils.distributed`) every process calls
    this with the same rows: the batches (the same ones as in a single process) are dealt out in
    turn, each process scores its own, and every process gets back every row's score exactly once,
    in the order of ``rows`` — the scores of a single process.

    ``journal``: a file where the scores are saved as they come (:mod:`corarec.evaluation.journal`): a pass
    cut off goes on from there when called again with the same run, rows and batch size, and the file is
    removed when the pass completes. Not kept under a launcher with several processes.
    """
    method = run.method
    batch_size = batch_size or run.config.train.eval_batch_size
    was_training = method.training
    method.eval()
    scores = np.zeros(len(rows), dtype=np.float32)
    done = np.zeros(len(rows), dtype=bool)
    order = (np.argsort(run.batcher.token_lengths(rows), kind="stable") if len(rows) > batch_size
             else np.arange(len(rows)))  # one batch: no need to tokenise twice
    starts = range(distributed.rank() * batch_size, len(rows), distributed.world_size() * batch_size)  # this process's
    # the journal: read and written by a single process; under a launcher (each process scores other batches)
    # the main process only removes a single-process attempt's once the pass completes
    kept = ScoreJournal(journal, run, rows, batch_size) if journal is not None and distributed.is_main() else None
    keeping = kept is not None and not distributed.active()
    if keeping and (saved := kept.load(len(rows))) is not None:
        scores, done = saved
        starts = [start for start in starts if not done[order[start:start + batch_size]].all()]
        if progress and done.any():
            tqdm.write(f"{desc}: {int(done.sum())} of {len(rows)} rows already scored ({kept.path}); "
                       "scoring the rest")
    try:
        shown = progress and distributed.is_main() and len(starts) >= 2
        for start in tqdm(starts, desc=desc, unit="batch", leave=False, disable=not shown):
            picked = order[start:start + batch_size]                               # [b] positions in rows
            batch = run.batcher(rows.iloc[picked]).to(run.device)
            with run.llm.autocast():
                logits = method.score(batch)                                       # [b]
            scores[picked] = logits.float().cpu().numpy()
            done[picked] = True
            if keeping:
                kept.save_if_due(scores, done)
    except BaseException:
        if keeping and done.any():  # Ctrl-C or an error: what was scored is kept for the next attempt
            kept.save(scores, done)
        raise
    else:
        if kept is not None:  # the pass is complete
            kept.remove()
    finally:
        method.train(was_training)
        cache = getattr(method, "prefix_cache", None)
        if cache is not None:  # the last (< one shard of) rows too: the next pass or run reads them warm
            cache.flush()
    if distributed.active():
        scores = gathered_scores(scores, [order[start:start + batch_size] for start in starts])
    return scores


def gathered_scores(scores: np.ndarray, mine: list[np.ndarray]) -> np.ndarray:
    """Every process's ``scores [N]`` at the positions it scored (``mine``: one array per batch),
    gathered into one ``[N]`` on every process; a position scored by no process or by two is an error."""
    positions = np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)
    found = distributed.gather((positions, scores[positions]))
    merged = np.empty_like(scores)
    times = np.zeros(len(scores), dtype=np.int64)
    for where, values in found:
        merged[where] = values
        np.add.at(times, where, 1)
    if not (times == 1).all():
        raise RuntimeError(f"distributed scoring: {int((times == 0).sum())} row(s) scored by no process and "
                           f"{int((times > 1).sum())} by several")
    return merged


def report(rows: pd.DataFrame, scores: np.ndarray, train: pd.DataFrame) -> dict:
    """Metrics of ``scores`` on ``rows``: all / warm / cold parts (warm = user and item in train)."""
    warm = warm_mask(rows, train)
    return metric_report(rows["user_id"].to_numpy(), rows["label"].to_numpy(), scores, warm)


EVAL_DIR = "eval"
"""Folder of a run directory that holds one ``<split>.json`` per evaluated split."""


def evaluate(run: str | Path, data: str | Path | None = None, split: str = "test",
             max_samples: int | None = None, predictions: str | Path | None = None,
             batch_size: int | None = None, device: str | None = None, ranking: bool = False,
             k: str | list[int] = "5,10,20", pool: int = 100, max_users: int | None = 50,
             sample_seed: int | None = None) -> dict:
    """Score a split with a trained run; the print-ready metrics, also saved to ``RUN/eval/<split>.json``.

    ``max_samples`` keeps whole users so UAUC stays meaningful, drawn with ``sample_seed``: by default the
    seed the run drew its own validation rows with (``valid``: the same ``max_eval_samples`` rows give the
    same rows the training validated on) and the run's seed for the other splits (``corarec benchmark``
    draws its test rows with its ``--sample-seed``, 0 by default: pass that to score the same rows).
    ``predictions`` (``.csv`` or ``.parquet``) receives one row per scored pair. Every option is
    checked before the run is loaded; the training's ``metrics.json`` is never written. Under a
    launcher with several processes the rows are scored in parallel and the main process writes.

    ``ranking``: the top-k evaluation of the test split instead
    (:func:`corarec.evaluation.ranking.evaluate_ranking` with ``k``, ``pool``, ``max_users``),
    saved to ``RUN/eval/ranking-test.json``.
    """
    from corarec.training.rows import sample_seeds
    from corarec.training.runs import load_run

    if ranking:
        from corarec.evaluation.ranking import evaluate_ranking

        distributed.one_process_only("corarec evaluate --ranking")

        for name, value, default in (("--split", split, "test"), ("--max-samples", max_samples, None),
                                     ("--predictions", predictions, None), ("--sample-seed", sample_seed, None)):
            if value != default:
                raise CorarecError(f"{name} does not apply to --ranking (the top-k evaluation ranks test "
                                   "users; --max-users sets how many)")
        check_option(TrainConfig, "eval_batch_size", batch_size, "--batch-size")
        return evaluate_ranking(run, data=data, k=k, pool=pool, max_users=max_users, batch_size=batch_size,
                                device=device)
    if split not in SPLITS:
        raise CorarecError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")
    if max_samples is not None and max_samples < 1:
        raise CorarecError(f"--max-samples must be at least 1 (omit it to score every row), got {max_samples}")
    if predictions is not None:
        check_predictions_path(predictions)
    check_option(TrainConfig, "eval_batch_size", batch_size, "--batch-size")
    check_option(TrainConfig, "valid_sample_seed", sample_seed, "--sample-seed")
    loaded = load_run(run, data=data, device=device)
    distributed.start(loaded.device)  # under a launcher: the processes share the rows (no-op otherwise)
    cfg = loaded.config
    if sample_seed is None:
        sample_seed = sample_seeds(cfg)[1] if split == "valid" else cfg.seed
    rows = subsample_users(loaded.dataset.splits[split], max_samples, sample_seed)
    journal = Path(run) / EVAL_DIR / f"{split}{JOURNAL_ENDING}"  # the scores so far, if cut off
    scores = score_rows(loaded, rows, batch_size, desc=split, journal=journal)
    metrics = report(rows, scores, loaded.dataset.train)
    metrics["max_samples"] = max_samples
    metrics["sample_seed"] = sample_seed
    if split == "valid" and cfg.train.train_split == "valid-half":  # said, not refused: half B is in there too
        metrics["in_sample"] = ("the run trained on half of the validation split's users (train_split 'valid-half'); "
                                "these metrics include their rows")
        if distributed.is_main():
            tqdm.write(f"note: {metrics['in_sample']}")

    if distributed.is_main():  # every process holds every score; one writes
        if predictions is not None:
            write_predictions(predictions, rows, scores, loaded.dataset)
        write_json(Path(run) / EVAL_DIR / f"{split}.json",
                   {"split": split, "data": str(loaded.config.data), **metrics,
                    "predictions": str(predictions) if predictions is not None else None})
    distributed.barrier()  # the files are there when any process returns
    return metrics


def check_predictions_path(path: str | Path) -> None:
    """A predictions file must be a ``.csv`` or ``.parquet`` file path, not a directory."""
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise CorarecError(f"{path}: predictions must be a .csv or .parquet file")
    if path.is_dir():
        raise CorarecError(f"{path}: is a directory; predictions need a .csv or .parquet file path")


def write_predictions(path: str | Path, rows: pd.DataFrame, scores: np.ndarray, dataset) -> None:
    """Write scored rows (raw ids, label, logit, probability) to CSV or parquet, atomically."""
    path = Path(path)
    check_predictions_path(path)
    users = dataset.users["user_raw"].to_numpy() if dataset.users is not None else rows["user_id"].to_numpy()
    items = dataset.items["item_raw"].to_numpy() if "item_raw" in dataset.items else dataset.items["item_id"].to_numpy()
    out = pd.DataFrame({
        "user": users[rows["user_id"].to_numpy()],
        "item": items[rows["item_id"].to_numpy()],
        "label": rows["label"].to_numpy(),
        "logit": scores,
        "probability": 1.0 / (1.0 + np.exp(-scores.astype(np.float64))),
    })
    write_table(path, out)


def format_metrics(metrics: dict, title: str = "") -> str:
    """A small aligned table of the all / warm / cold metrics."""
    lines = [title] if title else []
    lines.append(f"{'part':<6} {'rows':>7} {'users':>6} {'AUC':>7} {'UAUC':>7} {'GAUC':>7}")
    for part in ("all", "warm", "cold"):
        m = metrics.get(part) or {}
        lines.append(f"{part:<6} {m.get('rows', 0):>7} {m.get('users', 0):>6} "
                     f"{_fmt(m.get('auc'))} {_fmt(m.get('uauc'))} {_fmt(m.get('gauc'))}")
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:>7.4f}" if isinstance(value, (int, float)) and value == value else f"{'-':>7}"
