"""History of a row (CoLLM protocol): the same user's earlier positive items, oldest first.

Rows of all splits are pooled and ordered by (user, timestamp); ties keep the input order, so a
row's history holds the positives of the rows that come before it in that order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def add_history(splits: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Return copies of ``splits`` with a ``history`` column (list of item ids, oldest first)."""
    names = list(splits)
    frames = []
    for rank, name in enumerate(names):
        frame = splits[name][["user_id", "item_id", "label", "timestamp"]].copy()
        frame["_split"] = rank
        frame["_row"] = np.arange(len(frame))
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    # Stable sort: equal timestamps keep split order then file order.
    rows = rows.sort_values(["user_id", "timestamp", "_split", "_row"], kind="stable")

    histories: list[list[int]] = []
    current_user, positives = None, []
    for user, item, label in zip(rows["user_id"].to_numpy(), rows["item_id"].to_numpy(), rows["label"].to_numpy()):
        if user != current_user:
            current_user, positives = user, []
        histories.append(list(positives))
        if label == 1:
            positives.append(int(item))
    rows["history"] = histories

    out = {}
    for rank, name in enumerate(names):
        part = rows[rows["_split"] == rank].sort_values("_row")
        frame = splits[name].copy()
        frame["history"] = part["history"].to_list()
        out[name] = frame
    return out
