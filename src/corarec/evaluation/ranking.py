"""Top-k evaluation of the two-stage recommender: Recall@k, NDCG@k, HR@k and MRR on the test split.

The protocol (``corarec evaluate --ranking``), for each sampled test user:

- **users**: those with at least one target (below), drawn whole and seeded (``max_users``; the
  same users for every run of a dataset and seed); warm = the user occurs in train, cold = not;
- **catalogue**: every item outside the user's train and valid rows (any label);
- **targets**: the user's positive test items (all lie in the catalogue unless the user also has
  a train or valid row of the item; such a target is left out, as no list can hold it);
- **history** (prompt and CF fold-in): the user's positive train and valid items *strictly before*
  their first test timestamp, oldest first, so that nothing of the test period leaks in;
- **pool**: the CF model's top ``pool`` catalogue items (a run without a CF model: by popularity),
  selected by :meth:`~corarec.serving.recommender.Recommender.pool_rows` as ``recommend`` does;
- three ordered lists, each at most ``pool`` long: the pool in the CF model's order, the ``pool``
  most popular catalogue items (positive train rows) in popularity order, and the pool re-ranked
  by the run's method (its logits, through the recommender's scoring loop).

Each list is scored against all of the user's targets, so a target missing from the list counts
as a miss (``targets_in_pool``, the per-user share of targets the pool holds, is the ceiling of
Recall for the re-ranked list). Equal scores are an unordered group: a metric is its expected
value over the orders of the group (as ties count ½ in AUC), so no list gains from an arbitrary
tie-break. Every metric is averaged over users (all / warm / cold).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from corarec.errors import CorarecError
from corarec.evaluation.evaluate import EVAL_DIR
from corarec.evaluation.journal import ENDING
from corarec.serving.users import UserState
from corarec.utils.io import write_json

DEFAULT_K = (5, 10, 20)
RANKING_FILE = "ranking-test.json"
"""File of ``RUN/eval/`` that holds a run's top-k evaluation (never ``metrics.json``)."""
ORDERS = ("cf", "popularity", "reranked")
"""The ranked lists compared: the CF model's pool order, item popularity, the method's re-ranking."""


# ----- metrics of one ranked list ------------------------------------------------------------------
def list_metrics(scores: Sequence[float], relevant: Sequence[bool], n_targets: int, ks: Sequence[int]) -> dict:
    """Recall@k, NDCG@k, HR@k (each ``k`` of ``ks``) and MRR of a list of items with ``scores``
    (higher first), ``relevant`` marking targets, against ``n_targets`` targets in all (targets
    outside the list count as misses). Tied scores: expected values over their orders."""
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(relevant, dtype=bool)
    if s.ndim != 1 or s.shape != r.shape:
        raise CorarecError(f"ranking: scores ({s.shape}) and relevant ({r.shape}) must be 1-D and of equal length")
    if np.isnan(s).any():
        raise CorarecError(f"ranking: {int(np.isnan(s).sum())} score(s) are NaN")
    if n_targets < max(1, int(r.sum())):
        raise CorarecError(f"ranking: n_targets ({n_targets}) must be at least 1 and at least the targets "
                           f"in the list ({int(r.sum())})")
    order = np.argsort(-s, kind="stable")
    s, r = s[order], r[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, dtype=np.int64)
    sizes = np.diff(np.r_[starts, len(s)])
    hits = np.add.reduceat(r.astype(np.float64), starts) if len(s) else np.zeros(0)
    chance = np.repeat(hits / np.maximum(sizes, 1), sizes)              # [L] P(target at this position)
    out: dict[str, float] = {}
    for k in ks:
        m = min(k, len(s))
        out[f"recall@{k}"] = float(chance[:m].sum() / n_targets)
        out[f"ndcg@{k}"] = float((chance[:m] * _discount(m)).sum() / _discount(min(n_targets, k)).sum())
        out[f"hr@{k}"] = _hit_rate(starts, sizes, hits, k)
    out["mrr"] = _reciprocal_rank(starts, sizes, hits)
    return out


def _discount(n: int) -> np.ndarray:
    """``[n]`` DCG discounts 1 / log2(position + 1) of positions 1..n."""
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


def _miss(size: int, targets: int, m: int) -> np.ndarray:
    """``[m + 1]``: P(none of the first j positions of a tie group holds a target), j = 0..m."""
    j = np.arange(m, dtype=np.float64)
    return np.r_[1.0, np.cumprod(np.clip(size - targets - j, 0, None) / (size - j))]


def _hit_rate(starts: np.ndarray, sizes: np.ndarray, hits: np.ndarray, k: int) -> float:
    """P(a target within the first ``k`` positions): decided by the first group holding one."""
    for start, size, found in zip(starts, sizes, hits):
        if start >= k:
            break
        if found:
            return float(1.0 - _miss(int(size), int(found), min(int(size), k - int(start)))[-1])
    return 0.0


def _reciprocal_rank(starts: np.ndarray, sizes: np.ndarray, hits: np.ndarray) -> float:
    """E[1 / rank of the first target] (0 without a target in the list)."""
    for start, size, found in zip(starts, sizes, hits):
        if found:
            miss = _miss(int(size), int(found), int(size))                  # P(first target at offset >= j)
            first = miss[:-1] - miss[1:]                                     # P(first target at offset j)
            return float((first / (start + 1 + np.arange(int(size)))).sum())
    return 0.0


# ----- which users, which items ----------------------------------------------------------------------
@dataclass
class RankingUser:
    """One test user of the protocol (see the module docstring)."""

    user_id: int
    raw: str
    history: list[int]
    """Positive train/valid items strictly before the first test timestamp, oldest first."""
    seen: set[int]
    """Items of the user's train and valid rows (outside the catalogue)."""
    targets: set[int]
    cold: bool


def ranking_users(ds, max_users: int | None, seed: int) -> list[RankingUser]:
    """The users of the protocol, in user-id order: every test user with a target, or ``max_users``
    of them drawn with ``seed`` (whole users)."""
    test = ds.test
    first_test = test.groupby("user_id")["timestamp"].min()
    known = pd.concat([ds.train.assign(_split=0), ds.valid.assign(_split=1)], ignore_index=False)
    known = known.assign(_row=np.r_[np.arange(len(ds.train)), np.arange(len(ds.valid))])
    known = known.sort_values(["user_id", "timestamp", "_split", "_row"], kind="stable")
    seen = known.groupby("user_id")["item_id"].agg(set)
    before = known[(known["label"] == 1)
                   & (known["timestamp"].to_numpy() < first_test.reindex(known["user_id"]).to_numpy(na_value=-np.inf))]
    history = before.groupby("user_id", sort=False)["item_id"].agg(list)
    liked = test[test["label"] == 1].groupby("user_id")["item_id"].agg(set)
    train_users = set(pd.unique(ds.train["user_id"]).tolist())
    raw = (dict(zip(ds.users["user_id"].astype(int), ds.users["user_raw"].astype(str)))
           if ds.users is not None else {})
    users = []
    for user, items in liked.items():
        user = int(user)
        targets = {int(i) for i in items} - seen.get(user, set())
        if targets:
            users.append(RankingUser(user_id=user, raw=raw.get(user, str(user)),
                                     history=[int(i) for i in history.get(user, [])],
                                     seen={int(i) for i in seen.get(user, set())}, targets=targets,
                                     cold=user not in train_users))
    if max_users is not None and len(users) > max_users:
        keep = np.sort(np.random.default_rng(seed).choice(len(users), size=max_users, replace=False))
        users = [users[i] for i in keep]
    return users


# ----- the evaluation ------------------------------------------------------------------------------------
def rank_users(recommender, users: list[RankingUser], pool: int, ks: Sequence[int],
               journal: str | Path | None = None) -> dict:
    """The three lists of every user (see the module docstring), their metrics per user and averaged
    (all / warm / cold). The method scores every user's pool in one pass of the scoring loop (``journal``: where
    it keeps its scores so far, to go on there when cut off; :mod:`corarec.evaluation.journal`)."""
    n_items = recommender.dataset.n_items
    pools, lists = [], []
    for user in users:
        state = UserState(user_id=user.user_id, history=user.history, seen=user.seen, cold=user.cold)
        catalogue = np.setdiff1d(np.arange(n_items), np.fromiter(user.seen, dtype=np.int64, count=len(user.seen)))
        rows = recommender.pool_rows(state, user.raw, recommender.item_raw[catalogue].tolist(), catalogue.tolist(),
                                     [recommender.titles[i] for i in catalogue], pool)
        popularity = recommender.popularity[catalogue].astype(np.float64)
        popular = np.argsort(-popularity, kind="stable")[:pool]
        lists.append({"cf": rows["cf_logit"].to_numpy() if "cf_logit" in rows else None,
                      "popularity": (popularity[popular], catalogue[popular])})
        pools.append(rows)
    started = time.perf_counter()
    logits = recommender.logits(pd.concat(pools, ignore_index=True), journal) if pools else np.zeros(0)
    scoring_seconds = time.perf_counter() - started
    per_user, offset = [], 0
    for user, rows, listed in zip(users, pools, lists):
        in_pool = rows["item_id"].isin(user.targets).to_numpy()
        n = len(user.targets)
        pop_scores, pop_items = listed["popularity"]
        entry = {"user": user.raw, "cold": user.cold, "targets": n, "in_pool": int(in_pool.sum()),
                 "cf": None if listed["cf"] is None else list_metrics(listed["cf"], in_pool, n, ks),
                 "popularity": list_metrics(pop_scores, np.isin(pop_items, list(user.targets)), n, ks),
                 "reranked": list_metrics(logits[offset:offset + len(rows)], in_pool, n, ks)}
        offset += len(rows)
        per_user.append(entry)
    parts = {"all": summarise(per_user), "warm": summarise([u for u in per_user if not u["cold"]]),
             "cold": summarise([u for u in per_user if u["cold"]])}
    return {"parts": parts, "per_user": per_user, "scored_rows": int(len(logits)),
            "scoring_seconds": round(scoring_seconds, 1)}


def summarise(per_user: list[dict]) -> dict:
    """Users, targets, mean share of targets in the pool and each list's mean metrics (None when empty)."""
    out: dict[str, Any] = {"users": len(per_user), "targets": int(sum(u["targets"] for u in per_user)),
                           "targets_in_pool": (float(np.mean([u["in_pool"] / u["targets"] for u in per_user]))
                                               if per_user else None)}
    for order in ORDERS:
        given = [u[order] for u in per_user if u[order] is not None]
        out[order] = ({name: float(np.mean([g[name] for g in given])) for name in given[0]}
                      if given and len(given) == len(per_user) else None)
    return out


def parse_k(k: str | int | Sequence[int]) -> list[int]:
    """``--k``: comma-separated cut-offs (``5,10,20``) → sorted distinct integers >= 1."""
    parts = k.split(",") if isinstance(k, str) else [k] if isinstance(k, int) else list(k)
    values = []
    for part in parts:
        text = str(part).strip()
        if isinstance(part, bool) or not text.isdigit() or int(text) < 1:
            raise CorarecError(f"--k: expected comma-separated whole numbers >= 1 (5,10,20), got {k!r}")
        values.append(int(text))
    if not values:
        raise CorarecError("--k: name at least one cut-off")
    return sorted(set(values))


def check_ranking_options(pool: int, max_users: int | None) -> int | None:
    """``--pool`` >= 1 and ``--max-users`` >= 0; returns ``max_users`` with 0 as None (every user)."""
    for name, value, low in (("--pool", pool, 1), ("--max-users", 0 if max_users is None else max_users, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise CorarecError(f"{name} must be a whole number >= {low}, got {value!r}")
    return max_users or None


def evaluate_ranking(run: str | Path, data: str | Path | None = None, k: str | Sequence[int] = DEFAULT_K,
                     pool: int = 100, max_users: int | None = 50, seed: int = 0, batch_size: int | None = None,
                     device: str | None = None, progress: bool = True) -> dict:
    """Top-k evaluation of a trained run on the test split (the module's protocol); the result is
    also written to ``RUN/eval/ranking-test.json``. ``max_users`` test users (None or 0: all) are drawn
    with ``seed`` — the same users for every run of the dataset. Options are checked before loading."""
    from corarec.serving.recommender import Recommender
    from corarec.training.runs import load_run

    ks = parse_k(k)
    max_users = check_ranking_options(pool, max_users)
    started = time.perf_counter()
    recommender = Recommender(load_run(run, data=data, device=device), batch_size=batch_size, progress=progress)
    users = ranking_users(recommender.dataset, max_users, seed)
    if not users:
        raise CorarecError(f"{recommender.dataset.name}: no test user has a positive test item outside their "
                           "train and valid rows; nothing to rank")
    result = {"split": "test", "data": str(recommender.run.config.data), "method": recommender.run.config.method,
              "k": ks, "pool": pool, "pool_from": _pool_source(recommender), "max_users": max_users, "seed": seed,
              **rank_users(recommender, users, pool, ks, journal=Path(run) / EVAL_DIR / f"ranking-test{ENDING}")}
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json(Path(run) / EVAL_DIR / RANKING_FILE, result)
    return result


def _pool_source(recommender) -> str:
    """What pre-selects the pool: the CF model's kind, or popularity without one."""
    return "popularity" if recommender.cf is None else str(getattr(recommender.cf, "kind", type(recommender.cf).__name__))


ORDER_LABELS = {"cf": "CF order", "popularity": "popularity", "reranked": "re-ranked"}


def format_ranking(result: dict, title: str = "") -> str:
    """Aligned text tables (all / warm / cold users) of :func:`evaluate_ranking`'s result."""
    ks = result["k"]
    columns = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "hr")] + ["mrr"]
    heads = [c.replace("recall", "Recall").replace("ndcg", "NDCG").replace("hr", "HR").replace("mrr", "MRR")
             for c in columns]
    width = 1 + max(8, *(len(h) for h in heads))
    lines = [title] if title else []
    by = "popularity" if result["pool_from"] == "popularity" else f"the CF model ({result['pool_from']})"
    lines.append(f"pool: top {result['pool']} of the catalogue by {by}; "
                 f"{result['scored_rows']} rows scored in {result['scoring_seconds']:.1f} s")
    for name in ("all", "warm", "cold"):
        part = result["parts"][name]
        share = part["targets_in_pool"]
        lines.append(f"{name} users: {part['users']}, targets {part['targets']}, "
                     f"in pool {'-' if share is None else f'{100 * share:.1f} %'}")
        if not part["users"]:
            continue
        lines.append(f"  {'list':<11}" + "".join(f"{h:>{width}}" for h in heads))
        for order in ORDERS:
            if part[order] is not None:
                lines.append(f"  {ORDER_LABELS[order]:<11}" + "".join(f"{part[order][c]:>{width}.4f}" for c in columns))
    return "\n".join(lines)
