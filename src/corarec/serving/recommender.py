"""Use a trained run: score (user, item) pairs in raw ids and recommend items for one user.

``corarec.load(RUN)`` returns a :class:`Recommender`. It speaks the dataset's *original* (raw) ids
and handles everyone:

- a **known user**'s history is every item they liked in the dataset (all splits, time order), and
  the items they interacted with (any label, any split) are left out of their recommendations;
  a pair's own item is left out of its history (a prompt never says the user already liked the
  item it asks about). Scoring the dataset's own test rows this way is *not* the evaluation
  protocol (whose history holds only earlier positives): use ``corarec evaluate`` for metrics;
- an **unknown user** (not in the dataset) is scored with the CF model's cold-start (fold-in)
  embedding, built from the ``history`` passed with the request, if any;
- an **unknown item** is scored with the CF model's fallback item embedding (the mean train item)
  and, in the prompt, the ``title`` given with it (a pair's ``title``, a candidate's
  ``{"item", "title"}``), else the placeholder "an unknown <noun>". A known item always reads its
  dataset title;
- ``cold`` flags a row whose user or item did not occur in train (the same warm/cold split as the
  evaluation), i.e. a row that reads a cold-start embedding. Nothing is ever dropped.

Recommending without candidates is two-stage: the CF model scores every item the user has not
interacted with and keeps its top ``pool``; the LLM method re-ranks that pool. A run whose method
has no CF model pre-selects by popularity (positive train rows) instead.

Scoring runs the evaluation's loop (:func:`corarec.evaluation.evaluate.score_rows`). What requests
send in is checked by :mod:`corarec.serving.pairs`; ``corarec recommend`` is :mod:`corarec.serving.recommend`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from corarec.errors import CorarecError
from corarec.evaluation.evaluate import score_rows
from corarec.serving.pairs import candidate_records, check_k_pool, normalise_id, pair_records
from corarec.serving.users import UserState, user_histories, without


class Recommender:
    """A loaded run that scores raw-id pairs and ranks items for a user (see the module docstring)."""

    def __init__(self, run, batch_size: int | None = None, progress: bool = True) -> None:
        """``run``: a :class:`~corarec.training.runs.LoadedRun`; ``batch_size``: rows per forward pass
        (default: the run's evaluation batch size); ``progress``: show a progress bar on long calls."""
        self.run = run
        self.progress = progress
        self.dataset = run.dataset
        self.batch_size = batch_size or run.config.train.eval_batch_size
        ds = run.dataset
        self.titles: list[str] = ds.titles()
        self.item_raw = np.asarray([str(x) for x in (ds.items["item_raw"] if "item_raw" in ds.items else ds.items["item_id"])],
                                   dtype=object)
        self.user_ids = ds.user_index()
        self.item_ids = ds.item_index()
        self.train_users = set(pd.unique(ds.train["user_id"]).tolist())
        self.train_items = set(pd.unique(ds.train["item_id"]).tolist())
        self.histories, self.interacted = user_histories(ds.splits)
        self.cf = _find_cf(run)
        self.popularity = np.bincount(ds.train.loc[ds.train["label"] == 1, "item_id"].to_numpy(),
                                      minlength=ds.n_items)

    # ----- the two public calls ----------------------------------------------------------------
    def score(self, pairs: Any, journal: str | Path | None = None) -> pd.DataFrame:
        """Score ``pairs``: a DataFrame with ``user``, ``item`` (raw ids; optional ``label``,
        ``history`` = list of raw item ids for an unknown user, and ``title`` = the text of an item
        the dataset does not know), or a list of ``(user, item)`` tuples / ``{"user", "item"}``
        dicts. Returns one row per pair, in order: user, item, [label], logit, probability, cold,
        cold_user, cold_item. ``journal``: where a long scoring keeps its scores so far, to go on
        there when cut off (:mod:`corarec.evaluation.journal`)."""
        rows = self.resolve(pair_records(pairs))
        return self.scored(rows, self.logits(rows, journal))

    def recommend(self, user: Any, k: int = 10, candidates: Sequence[Any] | None = None, pool: int = 100,
                  history: Sequence[Any] | None = None, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` items for raw user id ``user``: rank, item, title, logit, probability (and
        ``cf_logit`` when the CF model pre-selected the pool). ``candidates`` (raw item ids, or
        ``{"item": id, "title": text}`` dicts, which may name items the dataset does not know) limits
        the choice; otherwise the CF model's top ``pool`` items are re-ranked. Items the user
        interacted with are left out unless ``exclude_seen`` is False. ``history`` (raw item ids)
        stands in for the dataset's history, e.g. for an unknown user."""
        rows = self.candidates(user, k, candidates, pool, history, exclude_seen)
        return self.ranked(rows, self.logits(rows), k)

    # ----- steps (the HTTP service runs the model call of several requests together) ----------
    def resolve(self, pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validated pairs (:func:`pair_records`) → rows with internal ids, history and cold flags
        (plain dicts: the HTTP service resolves every request, so this stays free of pandas)."""
        rows = []
        for n, pair in enumerate(pairs, start=1):
            state = self.user_state(pair["user"], pair.get("history"), where=f"row {n}")
            item_id = self.item_ids.get(pair["item"], -1)
            cold_item = item_id not in self.train_items
            rows.append({**pair, "user_id": state.user_id, "item_id": item_id,
                         "history": without(state.history, item_id),
                         "cold": state.cold or cold_item, "cold_user": state.cold, "cold_item": cold_item})
        return rows

    def user_state(self, user: Any, history: Sequence[Any] | None = None, where: str = "user") -> UserState:
        """History, interacted items and coldness of raw user id ``user`` (``history`` overrides)."""
        user = normalise_id(user)
        if user is None:
            raise CorarecError(f"{where}: user is empty")
        uid = self.user_ids.get(user, -1)
        seen = set(self.interacted.get(uid, ()))
        if history is not None:
            liked = self.item_list(history, f"{where}: history")
            seen |= set(liked)
        else:
            liked = list(self.histories.get(uid, ()))
        return UserState(user_id=uid, history=liked, seen=seen, cold=uid not in self.train_users)

    def item_list(self, raw_items: Iterable[Any], where: str) -> list[int]:
        """Raw item ids → internal ids; an id unknown to the dataset is an error naming it."""
        out = []
        for position, raw in enumerate(raw_items, start=1):
            key = normalise_id(raw)
            if key not in self.item_ids:
                raise CorarecError(f"{where}: item {position} ({raw!r}) is not an item of dataset "
                                   f"'{self.dataset.name}'")
            out.append(self.item_ids[key])
        return out

    def candidates(self, user: Any, k: int = 10, candidates: Sequence[Any] | None = None, pool: int = 100,
                   history: Sequence[Any] | None = None, exclude_seen: bool = True) -> pd.DataFrame:
        """The rows to re-rank for ``user`` (see :meth:`recommend`), with ``cf_logit`` when pooled."""
        check_k_pool(k, pool, candidates is not None)
        state = self.user_state(user, history)
        if candidates is not None:
            raw, items, titles = self.candidate_items(candidates)
        else:
            items = list(range(self.dataset.n_items))
            raw, titles = self.item_raw[items].tolist(), [self.titles[i] for i in items]
        if exclude_seen:
            keep = [n for n, i in enumerate(items) if i not in state.seen]
            raw, items, titles = [raw[n] for n in keep], [items[n] for n in keep], [titles[n] for n in keep]
        return self.pool_rows(state, normalise_id(user), raw, items, titles, None if candidates is not None else pool)

    def candidate_items(self, candidates: Sequence[Any]) -> tuple[list[str], list[int], list[str]]:
        """Raw keys, internal ids (-1: unknown to the dataset) and titles of ``candidates``, each
        once. An unknown item needs a title (``{"item", "title"}``); a known one keeps its own."""
        raw, items, titles, listed = [], [], [], set()
        for n, candidate in enumerate(candidate_records(candidates), start=1):
            if candidate["item"] in listed:
                continue
            listed.add(candidate["item"])
            item_id = self.item_ids.get(candidate["item"], -1)
            if item_id < 0 and candidate["title"] is None:
                raise CorarecError(f"candidates: item {n} ({candidate['item']!r}) is not an item of dataset "
                                   f"'{self.dataset.name}' (give a new item with its title)")
            raw.append(candidate["item"])
            items.append(item_id)
            titles.append(self.titles[item_id] if item_id >= 0 else candidate["title"])
        return raw, items, titles

    def pool_rows(self, state: UserState, user: str, raw: list[str], items: list[int], titles: list[str],
                  pool: int | None) -> pd.DataFrame:
        """The rows to re-rank for one user: every given item, or with ``pool`` the ``pool`` best by
        :meth:`prior_scores` (the CF model's; ``cf_logit`` is kept then, as it is for every item
        when the CF model scores them all). Each row's history is ``state.history``, the row's own
        item left out. :meth:`candidates` and the top-k evaluation
        (:mod:`corarec.evaluation.ranking`) both build their rows here."""
        rows = pd.DataFrame({"user": user, "item": pd.Series(raw, dtype=object), "user_id": state.user_id,
                             "item_id": np.asarray(items, dtype=np.int64), "title": pd.Series(titles, dtype=object)})
        rows["history"] = [without(state.history, i) for i in rows["item_id"]]
        if pool is not None and len(rows) > pool:
            prior = self.prior_scores(state, rows["item_id"].to_numpy())
            keep = np.argsort(-prior, kind="stable")[:pool]
            rows = rows.iloc[keep].reset_index(drop=True)
            if self.cf is not None:
                rows["cf_logit"] = prior[keep]
        elif pool is not None and self.cf is not None:
            rows["cf_logit"] = self.prior_scores(state, rows["item_id"].to_numpy())
        rows["cold_user"] = state.cold
        rows["cold_item"] = [int(i) not in self.train_items for i in rows["item_id"]]
        rows["cold"] = rows["cold_user"] | rows["cold_item"]
        return rows

    @torch.no_grad()
    def prior_scores(self, state: UserState, items: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Pre-selection scores of ``items`` for one user: CF logits, or popularity without a CF model."""
        if self.cf is None:
            return self.popularity[items].astype(np.float64)
        from corarec.cf.base import CFBatch, history_tensor

        device = self.run.device
        items = np.array(items, dtype=np.int64)  # a writable copy (pandas may hand out read-only arrays)
        history = history_tensor([state.history], self.cf.max_len).to(device)  # [1, L]: what the CF model reads
        out = np.empty(len(items), dtype=np.float64)
        for start in range(0, len(items), chunk):
            part = torch.as_tensor(items[start:start + chunk], dtype=torch.long, device=device)  # [b]
            batch = CFBatch(users=torch.full_like(part, state.user_id), items=part,
                            history=history.expand(len(part), -1))
            out[start:start + len(part)] = self.cf(batch).float().cpu().numpy()
        return out

    def logits(self, rows: list[dict[str, Any]] | pd.DataFrame, journal: str | Path | None = None) -> np.ndarray:
        """The method's logits ``[N]`` for resolved rows (user_id, item_id, history), in batches of
        ``batch_size``: the evaluation's loop (:func:`corarec.evaluation.evaluate.score_rows`, which
        scores in eval mode and restores the method's mode), its progress bar optional so that a
        server's log stays quiet."""
        if not isinstance(rows, pd.DataFrame):
            titled = any("title" in r for r in rows)
            rows = pd.DataFrame.from_records(rows, columns=["user_id", "item_id", "history"] + ["title"] * titled)
        rows = rows[[c for c in ("user_id", "item_id", "history", "title") if c in rows]].reset_index(drop=True)
        return score_rows(self.run, rows, self.batch_size, desc="scoring", progress=self.progress, journal=journal)

    def scored(self, rows: list[dict[str, Any]], logits: Sequence[float]) -> pd.DataFrame:
        """The public result of :meth:`score` from resolved rows and their logits."""
        columns = ["user", "item"] + (["label"] if rows and "label" in rows[0] else [])
        out = pd.DataFrame({c: [r[c] for r in rows] for c in columns})
        out["logit"] = np.asarray(logits, dtype=np.float64)
        out["probability"] = sigmoid(out["logit"].to_numpy())
        for column in ("cold", "cold_user", "cold_item"):
            out[column] = np.asarray([r[column] for r in rows], dtype=bool)
        return out

    def ranked(self, rows: pd.DataFrame, logits: np.ndarray, k: int) -> pd.DataFrame:
        """The public result of :meth:`recommend`: the top ``k`` of ``rows`` by logit."""
        order = np.argsort(-np.asarray(logits, dtype=np.float64), kind="stable")[:k]
        top = rows.iloc[order]
        out = pd.DataFrame({
            "rank": np.arange(1, len(top) + 1),
            "item": top["item"].to_numpy(),
            "title": top["title"].tolist() if "title" in top else [self.titles[i] for i in top["item_id"]],
            "logit": np.asarray(logits, dtype=np.float64)[order],
        })
        out["probability"] = sigmoid(out["logit"].to_numpy())
        if "cf_logit" in top:
            out["cf_logit"] = top["cf_logit"].to_numpy()
        out["cold"] = top["cold"].to_numpy(dtype=bool)
        return out

    # ----- description ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Method, LLM, CF model, dataset and the run's metrics, as plain JSON."""
        from corarec.utils.io import read_json
        from corarec.training.runs import METRICS

        cfg = self.run.config
        ds = self.dataset
        metrics: dict[str, Any] = {}
        if self.run.root is not None and (Path(self.run.root) / METRICS).is_file():
            metrics = {k: v for k, v in read_json(Path(self.run.root) / METRICS).items() if k != "valid_curve"}
        cf = None
        if self.cf is not None:
            cf = {"run": cfg.cf, "model": getattr(self.cf, "kind", type(self.cf).__name__),
                  "dim": int(getattr(self.cf, "dim", 0)), "users": int(self.cf.n_users), "items": int(self.cf.n_items)}
        return {
            "run": str(self.run.root) if self.run.root is not None else None,
            "method": cfg.method,
            "method_config": cfg.method_config,
            "llm": cfg.llm,
            "cf": cf,
            "dataset": {"name": ds.name, "path": str(ds.root) if ds.root else cfg.data, "item_noun": ds.item_noun,
                        "users": int(ds.n_users), "items": int(ds.n_items),
                        "rows": {name: int(len(frame)) for name, frame in ds.splits.items()}},
            "device": str(self.run.device),
            "metrics": metrics,
        }


def load(run: str | Path, data: str | Path | None = None, device: str | None = None,
         batch_size: int | None = None) -> Recommender:
    """Load a trained run (``corarec train``) for scoring and recommending.

    ``data`` overrides the prepared dataset recorded in the run; ``device`` is auto, cpu or cuda.
    """
    from corarec.training.runs import load_run

    return Recommender(load_run(run, data=data, device=device), batch_size=batch_size)


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-x))


def _find_cf(run) -> torch.nn.Module | None:
    """The run's frozen CF model: the method's own, else loaded from the run's CF directory."""
    if run.method.cf is not None:  # every method holds its CF model (or None) as ``cf``
        return run.method.cf
    if run.config.cf:
        from corarec.cf import load_cf

        return load_cf(run.config.cf, run.dataset).to(run.device).eval()
    return None
