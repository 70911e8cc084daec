"""``corarec recommend``: the top-k items for one user of a trained run, and their text table.

The work is :meth:`corarec.serving.recommender.Recommender.recommend`; this module reads the
candidates file, checks the options before the model is loaded, and formats the result.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from corarec.serving.pairs import check_k_pool, read_candidates
from corarec.serving.recommender import load


def recommend(run: str | Path, user: str, k: int = 10, candidates: str | Path | None = None, pool: int = 100,
              data: str | Path | None = None, device: str | None = None) -> pd.DataFrame:
    """Top-``k`` items for raw user id ``user`` of a run
    (see :meth:`~corarec.serving.recommender.Recommender.recommend`).

    ``candidates`` is a file of raw item ids: one per line (``.txt``), or a ``.csv``/``.parquet``
    table with an ``item`` column and optionally a ``title`` column (names items the dataset does not know).
    """
    from corarec.utils.distributed import one_process_only

    one_process_only("corarec recommend")
    ids = read_candidates(candidates) if candidates is not None else None
    check_k_pool(k, pool, ids is not None)  # before the slow part: loading the model
    return load(run, data=data, device=device).recommend(user, k=k, candidates=ids, pool=pool)


def format_recommendations(table: pd.DataFrame, title_width: int = 48) -> str:
    """An aligned text table of :meth:`~corarec.serving.recommender.Recommender.recommend`'s result."""
    if len(table) == 0:
        return "no items to recommend (every candidate was already seen by the user)"
    item_width = max(4, *(len(str(i)) for i in table["item"]))
    head = f"{'rank':>4}  {'item':<{item_width}}  {'title':<{title_width}}  {'logit':>8}  {'prob':>6}"
    if "cf_logit" in table:
        head += f"  {'CF logit':>8}"
    lines = [head]
    for row in table.itertuples(index=False):
        title = row.title if len(row.title) <= title_width else row.title[:title_width - 1] + "…"
        line = f"{row.rank:>4}  {str(row.item):<{item_width}}  {title:<{title_width}}  {row.logit:>8.3f}  {row.probability:>6.3f}"
        if "cf_logit" in table:
            line += f"  {row.cf_logit:>8.3f}"
        lines.append(line)
    return "\n".join(lines)
