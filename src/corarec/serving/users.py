"""What the recommender knows about users: each known user's liked items in time order and every item
they interacted with, read from all splits of the dataset (:class:`~corarec.serving.recommender.Recommender`,
the ranking evaluation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class UserState:
    """What the recommender knows about one user."""

    user_id: int
    """Internal id; -1 for a user unknown to the dataset."""
    history: list[int]
    """Liked items (internal ids), oldest first: the prompt's history and the CF fold-in input."""
    seen: set[int]
    """Items the user interacted with (left out of recommendations)."""
    cold: bool
    """True when the user did not occur in train (the CF model uses its cold-start embedding)."""


def without(history: list[int], item: int) -> list[int]:
    """``history`` without ``item`` (the same list when it does not hold it)."""
    return [i for i in history if i != item] if item in history else history


def user_histories(splits: dict[str, pd.DataFrame]) -> tuple[dict[int, list[int]], dict[int, set[int]]]:
    """Per user: liked items of all splits in time order (the history protocol's tie order), and
    every item the user interacted with."""
    frames = []
    for rank, frame in enumerate(splits.values()):
        part = frame[["user_id", "item_id", "label", "timestamp"]].copy()
        part["_split"], part["_row"] = rank, np.arange(len(part))
        frames.append(part)
    rows = pd.concat(frames, ignore_index=True).sort_values(["user_id", "timestamp", "_split", "_row"], kind="stable")
    liked = rows[rows["label"] == 1].groupby("user_id", sort=False)["item_id"].agg(list)
    seen = rows.groupby("user_id", sort=False)["item_id"].agg(set)
    return ({int(u): [int(i) for i in items] for u, items in liked.items()},
            {int(u): {int(i) for i in items} for u, items in seen.items()})
