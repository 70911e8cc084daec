"""``corarec predict``: score a file of (user, item) pairs in raw ids with a trained run.

Input: a table :func:`corarec.data.raw.read_table` reads (``.csv`` or ``.tsv``, optionally gzipped, or
``.parquet``, as ``prepare custom`` takes) with columns ``user`` and ``item`` (the dataset's original ids),
optionally ``label`` (0/1), ``history`` (raw item ids liked by an unknown user: a list in
parquet, space- or ``|``-separated text in CSV) and ``title`` (the text of an item the dataset does
not know: the prompt names the item by it instead of "an unknown <noun>"; a known item keeps its
dataset title, and an empty cell means no title). Output: the same rows, in order, with ``logit``,
``probability`` (of "Yes"), and the flags ``cold`` / ``cold_user`` / ``cold_item`` (the user or item
did not occur in train and was scored with a cold-start embedding). Unknown users and items are
scored, never dropped. A malformed row is an error naming its 1-based row number (CSV line = row + 1).
A run cut off (Ctrl-C) keeps the scores it has beside ``out`` (``OUT-<key>.partial.safetensors``,
:mod:`corarec.evaluation.journal`); the same command again scores only the rest.
With labels, the metrics (AUC, UAUC, GAUC; all / warm / cold rows) are returned as well.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from corarec.data.raw import read_table
from corarec.errors import CorarecError
from corarec.evaluation.journal import ENDING as JOURNAL_ENDING
from corarec.evaluation.metrics import metric_report
from corarec.serving.pairs import pair_records
from corarec.serving.recommender import load
from corarec.training.config import TrainConfig
from corarec.utils.io import TABLE_SUFFIXES, write_table
from corarec.utils.settings import check_option


def predict(run: str | Path, input: str | Path, out: str | Path, data: str | Path | None = None,
            batch_size: int | None = None, device: str | None = None) -> dict | None:
    """Score the pairs in ``input`` with ``run`` and write them to ``out`` (``.csv``/``.parquet``,
    atomically). Returns the metrics when ``input`` has a ``label`` column, else None."""
    from corarec.utils.distributed import one_process_only

    one_process_only("corarec predict")
    input, out = Path(input), Path(out)
    if out.suffix not in TABLE_SUFFIXES:
        raise CorarecError(f"{out}: output must be a .csv or .parquet file")
    if out.is_dir():
        raise CorarecError(f"{out}: is a directory; --out needs a .csv or .parquet file path")
    check_option(TrainConfig, "eval_batch_size", batch_size, "--batch-size")
    pairs = pair_records(read_table(input), where=str(input))  # validate before loading the model
    recommender = load(run, data=data, device=device, batch_size=batch_size)
    # a long file cut off goes on where it stopped: the scores so far wait beside the output until it is written
    scores = recommender.score(pairs, journal=out.with_name(f"{out.name}{JOURNAL_ENDING}"))
    write_table(out, scores)
    if "label" not in scores:
        return None
    return pair_metrics(scores)


def pair_metrics(scores: pd.DataFrame) -> dict:
    """AUC / UAUC / GAUC of scored pairs with labels, split into warm and cold rows (raw user ids
    group the rows, so distinct unknown users stay distinct)."""
    return metric_report(scores["user"].to_numpy(), scores["label"].to_numpy(), scores["logit"].to_numpy(),
                         ~scores["cold"].to_numpy(dtype=bool))
